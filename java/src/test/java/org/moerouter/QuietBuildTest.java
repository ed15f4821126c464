// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * A clean build prints nothing but problems: the native step, re-run on the build tree Maven just
 * made (so nothing recompiles), must be silent. The rest of the rule is checked by
 * {@code scripts/check-quiet-build.sh} (a whole {@code mvn -B -q verify} from a clean clone).
 */
class QuietBuildTest {
  @Test
  void theNativeBuildStepIsSilentWhenNothingIsWrong() throws Exception {
    Path root = Paths.get("..").toAbsolutePath().normalize();
    Path build = Paths.get("target", "cmake").toAbsolutePath();
    Assumptions.assumeTrue(Files.isRegularFile(build.resolve("CMakeCache.txt")), "no native build tree at " + build);
    ProcessBuilder pb = new ProcessBuilder("bash", root.resolve("scripts/build-native.sh").toString(), root.toString(),
        build.toString(), Paths.get("target", "native-install").toAbsolutePath().toString()).redirectErrorStream(true);
    pb.environment().remove("MOE_ROUTER_VERBOSE");
    Process p = pb.start();
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    p.getInputStream().transferTo(out);
    assertTrue(p.waitFor(300, TimeUnit.SECONDS), "build-native.sh did not finish");
    String text = out.toString(StandardCharsets.UTF_8);
    assertEquals(0, p.exitValue(), text);
    // Where there is no nvcc, saying that the CUDA jar is not built is the one line a build must print.
    String problems = text.replaceAll("(?m)^\\[build-native\\] warning: nvcc not found: .*\\R", "");
    assertEquals("", problems, "build-native.sh printed although nothing was wrong");
  }
}
