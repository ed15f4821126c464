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
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The native compatibility floor of the JNI libraries, as stated in README ("Native compatibility"):
 * the symbol versions each requires from the system must exist on glibc 2.17 with the libgcc_s of GCC
 * 4.2, and it must not need libstdc++ at all. A new call into glibc that only a newer version provides
 * (say the GLIBC_2.34 pthread symbols) fails here, naming the symbol. Every library this build made is
 * checked: the CPU one (classifier linux-x86_64) and, when CUDA was built, the CUDA one.
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

  /** One JNI library: the folder it ships in (its platform and extension) and its ELF facts. */
  static final class Library {
    final String folder;
    final Path path;
    final ElfDynamicInfo elf;

    Library(String folder, Path path) throws IOException {
      this.folder = folder;
      this.path = path;
      this.elf = ElfDynamicInfo.read(path);
    }

    @Override
    public String toString() {
      return folder;
    }
  }

  private static List<Library> libraries;

  @BeforeAll
  static void readLibraries() throws IOException, URISyntaxException {
    if (Boolean.getBoolean("moerouter.nativeSkipped"))
      Assumptions.abort("the native build was skipped (-Dnative.skip=true): no JNI library to check");
    Assumptions.assumeTrue(isLinuxX86(), "the JNI libraries are built for linux-x86_64 only");
    // Under Maven the build says what it made (both libraries unless CUDA was skipped); elsewhere (the GPU
    // bundle) every library on the class path is checked.
    String cudaSkipped = System.getProperty("moerouter.cudaSkipped");
    libraries = new ArrayList<>();
    for (String folder : List.of("linux-x86_64", "linux-x86_64-cuda")) {
      boolean required = cudaSkipped != null && (folder.equals("linux-x86_64") || cudaSkipped.equals("false"));
      if (required || RouterNative.class.getResource(folder + "/libjnimoerouter.so") != null)
        libraries.add(new Library(folder, locate(folder)));
    }
    assertFalse(libraries.isEmpty(), "no JNI library on the class path");
  }

  static List<Library> libraries() {
    return libraries;
  }

  /** The library of one platform folder as the class path has it (a folder of the build, or a jar's bytes). */
  static Path locate(String folder) throws IOException, URISyntaxException {
    URL url = RouterNative.class.getResource(folder + "/libjnimoerouter.so");
    assertNotNull(url, "the " + folder + " JNI library is missing from the class path");
    if ("file".equals(url.getProtocol())) return Paths.get(url.toURI());
    Path copy = Files.createTempFile("libjnimoerouter-" + folder, ".so");  // inside a jar: check the bytes that ship
    copy.toFile().deleteOnExit();
    try (InputStream in = url.openStream()) {
      Files.copy(in, copy, StandardCopyOption.REPLACE_EXISTING);
    }
    return copy;
  }

  static boolean isLinuxX86() {
    return System.getProperty("os.name").startsWith("Linux") && System.getProperty("os.arch").equals("amd64");
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("libraries")
  void needsOnlyBaseSystemLibraries(Library lib) {
    ElfDynamicInfo elf = lib.elf;
    Path library = lib.path;
    List<String> extra = new ArrayList<>(elf.needed);
    extra.removeAll(BASE_LIBRARIES);
    assertTrue(extra.isEmpty(), library + " needs libraries outside the base system: " + extra + " (all: " + elf.needed + ")");
    // Symbols that moved into libc.so.6 in glibc 2.34 still live in these on older systems.
    assertTrue(elf.needed.containsAll(List.of("libpthread.so.0", "libdl.so.2", "librt.so.1")),
        "libpthread/libdl/librt must be listed as needed for glibc < 2.34, got " + elf.needed);
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("libraries")
  void requiresNoLibstdcxxVersions(Library lib) {
    ElfDynamicInfo elf = lib.elf;
    TreeSet<String> cxx = elf.versionsWithPrefix("GLIBCXX_");
    cxx.addAll(elf.versionsWithPrefix("CXXABI_"));
    assertTrue(cxx.isEmpty(), "libstdc++ must be linked statically, but the library requires " + cxx
        + " for " + symbolsOf(elf, cxx) + " (" + lib + ")");
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("libraries")
  void glibcVersionsStayAtOrBelowTheFloor(Library lib) {
    ElfDynamicInfo elf = lib.elf;
    TreeSet<String> versions = elf.versionsWithPrefix("GLIBC_");
    assertFalse(versions.isEmpty(), "no GLIBC_ versions found: the ELF reader is broken");
    assertFalse(versions.contains("GLIBC_PRIVATE"), "GLIBC_PRIVATE is required by " + symbolsOf(elf, Set.of("GLIBC_PRIVATE")));
    TreeSet<String> above = above(versions, "GLIBC_", GLIBC_FLOOR);
    assertTrue(above.isEmpty(), "the floor is GLIBC_" + GLIBC_FLOOR + " but the " + lib + " library requires " + above
        + " for " + symbolsOf(elf, above) + " (pin them in native/compat/glibc_floor.cpp)");
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("libraries")
  void libgccVersionsStayAtOrBelowTheFloor(Library lib) {
    ElfDynamicInfo elf = lib.elf;
    TreeSet<String> above = above(elf.versionsWithPrefix("GCC_"), "GCC_", GCC_FLOOR);
    assertTrue(above.isEmpty(), "the floor is GCC_" + GCC_FLOOR + " but the " + lib + " library requires " + above
        + " for " + symbolsOf(elf, above));
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("libraries")
  void exportsOnlyJniEntryPointsAndTheCAbi(Library lib) {
    ElfDynamicInfo elf = lib.elf;
    List<String> stray = new ArrayList<>();
    for (String s : elf.exported) if (!EXPORTED.matcher(s).matches()) stray.add(s);
    assertTrue(stray.isEmpty(), "symbols leak out of the " + lib + " library (static libstdc++/CUDA runtime?): "
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
  @ParameterizedTest(name = "{0}")
  @MethodSource("libraries")
  void elfReaderAgreesWithReadelf(Library lib) throws IOException, InterruptedException {
    ElfDynamicInfo elf = lib.elf;
    Path library = lib.path;
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

  private static Map<String, TreeSet<String>> symbolsOf(ElfDynamicInfo elf, Set<String> versions) {
    Map<String, TreeSet<String>> out = new TreeMap<>();
    for (String v : versions) out.put(v, elf.symbolsByVersion.getOrDefault(v, new TreeSet<>()));
    return out;
  }
}
