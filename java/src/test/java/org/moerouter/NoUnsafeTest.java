// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Direct buffers and raw addresses work without sun.misc.Unsafe, on JDK 17 and on JDK 25 with Unsafe denied. */
class NoUnsafeTest {
  /** Where a second JDK (22+) lives on these machines; {@code -Dmoerouter.jdk25=DIR} overrides. */
  static final Path JDK25 = Paths.get(System.getProperty("moerouter.jdk25", "/usr/lib/jvm/temurin-25-jdk-amd64"));

  @ParameterizedTest(name = "{0}")
  @EnumSource(names = {"JAVA", "CPU"})
  void directBuffersAndRawAddressesMatchArrays(Backend backend) {
    MemoryPaths.check(backend);
  }

  @Test
  void noLibraryClassReferencesSunMiscUnsafe() throws IOException {
    Path classes = Paths.get(MoeRouter.class.getProtectionDomain().getCodeSource().getLocation().getPath());
    try (Stream<Path> files = Files.walk(classes)) {
      for (Path f : (Iterable<Path>) files.filter(p -> p.toString().endsWith(".class"))::iterator) {
        String bytes = new String(Files.readAllBytes(f), StandardCharsets.ISO_8859_1);
        assertFalse(bytes.contains("sun/misc/Unsafe"), f + " references sun.misc.Unsafe");
      }
    }
  }

  @Test
  void bufferAndAddressPathsRunOnJdk25WithUnsafeDenied() throws Exception {
    Path java = ChildJvm.javaOf(JDK25);
    Assumptions.assumeTrue(Files.isExecutable(java), "no JDK 25 at " + JDK25 + " (-Dmoerouter.jdk25=DIR)");
    ChildJvm.Result r = ChildJvm.run(java, List.of("--sun-misc-unsafe-memory-access=deny",
        "--enable-native-access=ALL-UNNAMED"), MemoryPaths.class.getName(), "CPU", "JAVA");
    assertEquals(0, r.status, r.toString());
    assertTrue(r.out.contains("memory paths OK: CPU,JAVA"), r.toString());
    assertFalse(r.err.contains("WARNING"), "JDK 25 printed warnings:\n" + r);
  }
}
