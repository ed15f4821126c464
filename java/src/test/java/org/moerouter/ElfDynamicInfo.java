// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;

/**
 * What a 64-bit little-endian ELF shared library asks of the dynamic linker, read from its section
 * headers: DT_NEEDED libraries, the symbol versions it requires (.gnu.version_r), which undefined
 * symbol needs which version (.gnu.version), and the symbols it exports. Plain Java so the check
 * needs no binutils; {@code NativeCompatibilityTest} cross-checks it against readelf where present.
 */
final class ElfDynamicInfo {
  private static final int SHT_DYNAMIC = 6;
  private static final int SHT_DYNSYM = 11;
  private static final int SHT_GNU_VERNEED = 0x6ffffffe;
  private static final int SHT_GNU_VERSYM = 0x6fffffff;
  private static final long DT_NEEDED = 1;

  /** DT_NEEDED entries, in file order. */
  final List<String> needed = new ArrayList<>();
  /** Required version names per needed file (from .gnu.version_r), e.g. libc.so.6 -> [GLIBC_2.2.5, ...]. */
  final Map<String, TreeSet<String>> requiredVersions = new LinkedHashMap<>();
  /** Undefined dynamic symbols per required version name, e.g. GLIBC_2.34 -> [pthread_create]. */
  final Map<String, TreeSet<String>> symbolsByVersion = new TreeMap<>();
  /** Defined global or weak dynamic symbols (what the library exports). */
  final TreeSet<String> exported = new TreeSet<>();

  private final ByteBuffer elf;

  private ElfDynamicInfo(ByteBuffer elf) {
    this.elf = elf;
  }

  static ElfDynamicInfo read(Path file) throws IOException {
    ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(file)).order(ByteOrder.LITTLE_ENDIAN);
    if (b.limit() < 64 || b.getInt(0) != 0x464c457f) throw new IOException(file + ": not an ELF file");
    if (b.get(4) != 2 || b.get(5) != 1) throw new IOException(file + ": not a 64-bit little-endian ELF file");
    ElfDynamicInfo info = new ElfDynamicInfo(b);
    info.parse();
    return info;
  }

  private void parse() throws IOException {
    long shoff = elf.getLong(0x28);
    int shentsize = Short.toUnsignedInt(elf.getShort(0x3a));
    int shnum = Short.toUnsignedInt(elf.getShort(0x3c));
    if (shoff <= 0 || shentsize < 64 || shnum == 0) throw new IOException("no section headers");
    Section[] sections = new Section[shnum];
    for (int i = 0; i < shnum; i++) sections[i] = new Section(elf, Math.toIntExact(shoff + (long) i * shentsize));

    Map<Integer, String> versionByIndex = new TreeMap<>();
    Section dynsym = null;
    Section versym = null;
    for (Section s : sections) {
      switch (s.type) {
        case SHT_DYNAMIC: {
          Section strtab = sections[s.link];
          for (long off = s.offset; off + 16 <= s.offset + s.size; off += 16) {
            long tag = elf.getLong((int) off);
            if (tag == 0) break;
            if (tag == DT_NEEDED) needed.add(string(strtab, elf.getLong((int) off + 8)));
          }
          break;
        }
        case SHT_GNU_VERNEED: {
          Section strtab = sections[s.link];
          long vn = s.offset;
          for (int i = 0; i < s.info; i++) {
            int cnt = Short.toUnsignedInt(elf.getShort((int) vn + 2));
            String file = string(strtab, Integer.toUnsignedLong(elf.getInt((int) vn + 4)));
            TreeSet<String> names = requiredVersions.computeIfAbsent(file, f -> new TreeSet<>());
            long aux = vn + Integer.toUnsignedLong(elf.getInt((int) vn + 8));
            for (int j = 0; j < cnt; j++) {
              int other = Short.toUnsignedInt(elf.getShort((int) aux + 6));
              String name = string(strtab, Integer.toUnsignedLong(elf.getInt((int) aux + 8)));
              names.add(name);
              versionByIndex.put(other, name);
              aux += Integer.toUnsignedLong(elf.getInt((int) aux + 12));
            }
            long next = Integer.toUnsignedLong(elf.getInt((int) vn + 12));
            if (next == 0) break;
            vn += next;
          }
          break;
        }
        case SHT_DYNSYM:
          dynsym = s;
          break;
        case SHT_GNU_VERSYM:
          versym = s;
          break;
        default:
          break;
      }
    }
    if (dynsym == null) throw new IOException("no .dynsym section: not a shared library?");
    Section strtab = sections[dynsym.link];
    int count = (int) (dynsym.size / 24);
    for (int i = 1; i < count; i++) {
      int off = (int) (dynsym.offset + 24L * i);
      String name = string(strtab, Integer.toUnsignedLong(elf.getInt(off)));
      int bind = (elf.get(off + 4) & 0xff) >> 4;
      int shndx = Short.toUnsignedInt(elf.getShort(off + 6));
      if (shndx != 0) {
        if (bind == 1 || bind == 2) exported.add(name);
      } else if (versym != null) {
        int index = Short.toUnsignedInt(elf.getShort((int) (versym.offset + 2L * i))) & 0x7fff;
        String version = versionByIndex.get(index);
        if (version != null) symbolsByVersion.computeIfAbsent(version, v -> new TreeSet<>()).add(name);
      }
    }
  }

  private String string(Section strtab, long index) {
    int start = Math.toIntExact(strtab.offset + index);
    int end = start;
    while (elf.get(end) != 0) end++;
    byte[] bytes = new byte[end - start];
    elf.get(start, bytes);
    return new String(bytes, StandardCharsets.US_ASCII);
  }

  /** Every required version name whose prefix is {@code prefix} ("GLIBC_", "GCC_", ...). */
  TreeSet<String> versionsWithPrefix(String prefix) {
    TreeSet<String> out = new TreeSet<>();
    for (TreeSet<String> names : requiredVersions.values())
      for (String n : names) if (n.startsWith(prefix)) out.add(n);
    return out;
  }

  /** Compares dotted version numbers numerically ("2.3.4" < "2.17"); missing parts count as 0. */
  static int compareVersions(String a, String b) {
    String[] x = a.split("\\."), y = b.split("\\.");
    for (int i = 0; i < Math.max(x.length, y.length); i++) {
      int p = i < x.length ? Integer.parseInt(x[i]) : 0;
      int q = i < y.length ? Integer.parseInt(y[i]) : 0;
      if (p != q) return Integer.compare(p, q);
    }
    return 0;
  }

  private static final class Section {
    final int type;
    final long offset;
    final long size;
    final int link;
    final int info;

    Section(ByteBuffer elf, int at) {
      type = elf.getInt(at + 4);
      offset = elf.getLong(at + 0x18);
      size = elf.getLong(at + 0x20);
      link = elf.getInt(at + 0x28);
      info = elf.getInt(at + 0x2c);
    }
  }
}
