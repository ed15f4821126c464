// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The native compatibility floor of the bundled JNI library, as stated in README ("Native
 * compatibility"): the symbol versions it requires from the system must exist on glibc 2.17 with the
 * libgcc_s of GCC 4.2, and it must not need libstdc++ at all. A new call into glibc that only a newer
 * version provides (say the GLIBC_2.34 pthread symbols) fails here, naming the symbol.
 */
class NativeCompatibilityTest {
  /** Highest GLIBC_x.y version the library may require; README states the same value. */
  static final String GLIBC_FLOOR = "2.17";
  /** Highest GCC_x.y.z (libgcc_s.so.1) version the library may require. */
  static final String GCC_FLOOR = "4.2.0";
  /** Libraries every glibc-based Linux has; libstdc++.so.6 is deliberately absent. */
  static final Set<String> BASE_LIBRARIES = Set.of("libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0",
      "librt.so.1", "libgcc_s.so.1", "ld-linux-x86-64.so.2");
  private static final Pattern EXPORTED = Pattern.compile("Java_.*|JNI_OnLoad.*|JNI_OnUnload.*|moe_[a-z0-9_]+");

  private static Path library;
  private static ElfDynamicInfo elf;

  @BeforeAll
  static void readLibrary() throws IOException, URISyntaxException {
    if (Boolean.getBoolean("moerouter.nativeSkipped"))
      Assumptions.abort("the native build was skipped (-Dnative.skip=true): no JNI library to check");
    URL url = RouterNative.class.getResource("linux-x86_64/libjnimoerouter.so");
    Assumptions.assumeTrue(url != null || !isLinuxX86(), "no linux-x86_64 JNI library here");
    assertNotNull(url, "the linux-x86_64 JNI library is missing from the class path");
    if ("file".equals(url.getProtocol())) {
      library = Paths.get(url.toURI());
    } else {  // inside a jar: check the bytes that ship
      library = Files.createTempFile("libjnimoerouter", ".so");
      library.toFile().deleteOnExit();
      try (InputStream in = url.openStream()) {
        Files.copy(in, library, StandardCopyOption.REPLACE_EXISTING);
      }
    }
    elf = ElfDynamicInfo.read(library);
  }

  private static boolean isLinuxX86() {
    return System.getProperty("os.name").startsWith("Linux") && System.getProperty("os.arch").equals("amd64");
  }

  @Test
  void needsOnlyBaseSystemLibraries() {
    List<String> extra = new ArrayList<>(elf.needed);
    extra.removeAll(BASE_LIBRARIES);
    assertTrue(extra.isEmpty(), library + " needs libraries outside the base system: " + extra + " (all: " + elf.needed + ")");
    // Symbols that moved into libc.so.6 in glibc 2.34 still live in these on older systems.
    assertTrue(elf.needed.containsAll(List.of("libpthread.so.0", "libdl.so.2", "librt.so.1")),
        "libpthread/libdl/librt must be listed as needed for glibc < 2.34, got " + elf.needed);
  }

  @Test
  void requiresNoLibstdcxxVersions() {
    TreeSet<String> cxx = elf.versionsWithPrefix("GLIBCXX_");
    cxx.addAll(elf.versionsWithPrefix("CXXABI_"));
    assertTrue(cxx.isEmpty(), "libstdc++ must be linked statically, but the library requires " + cxx
        + " for " + symbolsOf(cxx));
  }

  @Test
  void glibcVersionsStayAtOrBelowTheFloor() {
    TreeSet<String> versions = elf.versionsWithPrefix("GLIBC_");
    assertFalse(versions.isEmpty(), "no GLIBC_ versions found: the ELF reader is broken");
    assertFalse(versions.contains("GLIBC_PRIVATE"), "GLIBC_PRIVATE is required by " + symbolsOf(Set.of("GLIBC_PRIVATE")));
    TreeSet<String> above = above(versions, "GLIBC_", GLIBC_FLOOR);
    assertTrue(above.isEmpty(), "the floor is GLIBC_" + GLIBC_FLOOR + " but the library requires " + above + " for "
        + symbolsOf(above) + " (pin them in native/compat/glibc_floor.cpp)");
  }

  @Test
  void libgccVersionsStayAtOrBelowTheFloor() {
    TreeSet<String> above = above(elf.versionsWithPrefix("GCC_"), "GCC_", GCC_FLOOR);
    assertTrue(above.isEmpty(), "the floor is GCC_" + GCC_FLOOR + " but the library requires " + above + " for "
        + symbolsOf(above));
  }

  @Test
  void exportsOnlyJniEntryPointsAndTheCAbi() {
    List<String> stray = new ArrayList<>();
    for (String s : elf.exported) if (!EXPORTED.matcher(s).matches()) stray.add(s);
    assertTrue(stray.isEmpty(), "symbols leak out of the library (static libstdc++/CUDA runtime?): "
        + stray.subList(0, Math.min(20, stray.size())) + (stray.size() > 20 ? " and " + (stray.size() - 20) + " more" : ""));
    // The C ABI stays visible for FFM downcalls.
    for (String s : List.of("moe_router_create", "moe_router_destroy", "moe_route_host", "moe_route_backward_host",
        "moe_last_error_message", "moe_status_string"))
      assertTrue(elf.exported.contains(s), s + " is not exported");
  }

  @Test
  void readmeStatesTheSameFloor() throws IOException {
    Path readme = Paths.get(System.getProperty("moerouter.readme", "../README.md"));
    Assumptions.assumeTrue(Files.isRegularFile(readme), "README not found at " + readme.toAbsolutePath());
    String text = new String(Files.readAllBytes(readme), StandardCharsets.UTF_8);
    assertTrue(text.contains("`GLIBC_" + GLIBC_FLOOR + "`"), "README must state the glibc floor `GLIBC_" + GLIBC_FLOOR + "`");
    assertTrue(text.contains("`GCC_" + GCC_FLOOR + "`"), "README must state the libgcc_s floor `GCC_" + GCC_FLOOR + "`");
  }

  /** The reader agrees with binutils' readelf on NEEDED and the required versions (when readelf exists). */
  @Test
  void elfReaderAgreesWithReadelf() throws IOException, InterruptedException {
    Process p;
    try {
      p = new ProcessBuilder("readelf", "-W", "-d", "-V", library.toString()).redirectErrorStream(true).start();
    } catch (IOException e) {
      Assumptions.abort("readelf is not installed: " + e.getMessage());
      return;
    }
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertTrue(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0, "readelf failed:\n" + out);
    List<String> needed = new ArrayList<>();
    Matcher m = Pattern.compile("\\(NEEDED\\)\\s+Shared library: \\[([^\\]]+)\\]").matcher(out);
    while (m.find()) needed.add(m.group(1));
    assertEquals(needed, elf.needed, "DT_NEEDED");
    Map<String, TreeSet<String>> versions = new TreeMap<>();
    String file = null;
    boolean inVerneed = false;
    for (String line : out.split("\n")) {
      if (line.contains("Version needs section")) inVerneed = true;
      else if (line.startsWith("Version") && line.contains("section")) inVerneed = false;
      if (!inVerneed) continue;
      Matcher f = Pattern.compile("File: (\\S+)").matcher(line);
      Matcher n = Pattern.compile("Name: (\\S+)").matcher(line);
      if (f.find()) file = f.group(1);
      else if (n.find()) versions.computeIfAbsent(file, k -> new TreeSet<>()).add(n.group(1));
    }
    assertEquals(versions, new TreeMap<>(elf.requiredVersions), ".gnu.version_r");
  }

  private static TreeSet<String> above(Set<String> versions, String prefix, String floor) {
    TreeSet<String> out = new TreeSet<>();
    for (String v : versions) {
      String number = v.substring(prefix.length());
      if (!number.matches("[0-9]+(\\.[0-9]+)*") || ElfDynamicInfo.compareVersions(number, floor) > 0) out.add(v);
    }
    return out;
  }

  private static Map<String, TreeSet<String>> symbolsOf(Set<String> versions) {
    Map<String, TreeSet<String>> out = new TreeMap<>();
    for (String v : versions) out.put(v, elf.symbolsByVersion.getOrDefault(v, new TreeSet<>()));
    return out;
  }
}
