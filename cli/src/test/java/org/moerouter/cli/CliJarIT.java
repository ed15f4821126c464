// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The packaged command line as a user runs it: {@code java -jar moe-router-cli.jar} next to its {@code lib/}
 * (what the build copies to cli/target/lib), no flag at all, on the build JDK and on the JDK 22+ the build
 * found. The manifest gives the main class, the class path and {@code Enable-Native-Access}, so the native
 * library loads and JDK 24+ prints no restricted-method warning; a CUDA jar dropped into {@code lib/} under
 * the name the manifest lists is taken over the CPU one.
 */
class CliJarIT {
  @TempDir Path dir;

  @Test
  void javaDashJarLoadsTheNativeLibraryAndPrintsNoWarning() throws Exception {
    Path jar = Paths.get(System.getProperty("moerouter.cliJar"));
    Path app = dir.resolve("moe-router");
    Files.createDirectories(app.resolve("lib"));
    Files.copy(jar, app.resolve("moe-router-cli.jar"));
    try (var libs = Files.list(Paths.get(System.getProperty("moerouter.cliLib")))) {
      for (Path l : (Iterable<Path>) libs::iterator) Files.copy(l, app.resolve("lib").resolve(l.getFileName()));
    }
    List<String> homes = new ArrayList<>(List.of(System.getProperty("java.home")));
    String jdk22 = System.getProperty("moerouter.jdk22.home", "");
    if (!jdk22.isEmpty() && !Paths.get(jdk22).toRealPath().equals(Paths.get(homes.get(0)).toRealPath())) homes.add(jdk22);

    for (String home : homes) assertInfo(home, app, false);
    Path cuda = Paths.get(System.getProperty("moerouter.cudaJar"));
    if (Files.isRegularFile(cuda)) {
      String version = System.getProperty("moerouter.version");
      Files.copy(cuda, app.resolve("lib").resolve("moe-router-" + version + "-linux-x86_64-cuda.jar"));
      for (String home : homes) assertInfo(home, app, true);
    }
  }

  private void assertInfo(String home, Path app, boolean cudaKernels) throws IOException, InterruptedException {
    List<String> cmd = List.of(Paths.get(home, "bin", "java").toString(),
        "-Dorg.bytedeco.javacpp.cachedir=" + dir.resolve("javacpp-cache"), "-jar", "moe-router-cli.jar", "info");
    Path out = dir.resolve("out"), err = dir.resolve("err");
    Process p = new ProcessBuilder(cmd).directory(app.toFile()).redirectOutput(out.toFile()).redirectError(err.toFile())
        .start();
    assertTrue(p.waitFor(120, TimeUnit.SECONDS), "timed out: " + cmd);
    String stdout = Files.readString(out, StandardCharsets.UTF_8), stderr = Files.readString(err, StandardCharsets.UTF_8);
    String where = "\n" + String.join(" ", cmd) + "\nstdout:\n" + stdout + "stderr:\n" + stderr;
    assertEquals(0, p.exitValue(), where);
    assertEquals("", stderr, "java -jar printed on stderr:" + where);
    assertTrue(stdout.startsWith("native library: loaded\n"), where);
    assertTrue(stdout.contains("CUDA kernels compiled: " + cudaKernels + ","), where);
  }
}
