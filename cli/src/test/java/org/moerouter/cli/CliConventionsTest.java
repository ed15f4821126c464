// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.trace.Npy;

/** Command-line conventions: help per command, version, flags, one error prefix, progress, launcher. */
class CliConventionsTest {
  @TempDir Path dir;

  static MainTest.Run run(String... args) {
    return MainTest.run(args);
  }

  /** The command line is a usage error: status 2 and a message that starts with {@code error}. */
  static MainTest.Run assertUsageError(String error, String... args) {
    MainTest.Run r = run(args);
    assertEquals(2, r.status, String.join(" ", args) + ": " + r.err);
    assertTrue(r.err.startsWith("moe-router: error: " + error), r.err);
    return r;
  }

  @Test
  void everyCommandAnswersHelpOnStdoutWithStatusZero() {
    String[][] cases = {{"route", "--help"}, {"demo", "--help"}, {"demo", "-h"}, {"info", "--help"},
        {"trace", "convert", "--help"}, {"trace", "inspect", "--help"}, {"trace", "diff", "-h"}, {"case", "--help"},
        {"--help"}};
    for (String[] c : cases) {
      MainTest.Run r = run(c);
      assertEquals(0, r.status, String.join(" ", c) + ": " + r.err);
      assertTrue(r.out.startsWith("usage: moe-router"), String.join(" ", c) + ": " + r.out);
      assertEquals("", r.err, String.join(" ", c));
    }
  }

  @Test
  void versionIsPrinted() {
    MainTest.Run r = run("--version");
    assertEquals(0, r.status);
    assertTrue(r.out.matches("moe-router \\d+\\.\\d+\\.\\d+(-SNAPSHOT)?\\n"), r.out);
  }

  /** Every option demo accepts is in its usage line and its help, and nothing else is accepted. */
  @Test
  void demoUsageListsEveryAcceptedFlag() {
    List<String> accepted = List.of("--backend", "--layers", "--tokens", "--hidden", "--model", "--out", "--seed",
        "--micro-batches", "--progress", "--no-progress");
    String help = run("demo", "--help").out;
    for (String flag : accepted) {
      assertTrue(Main.USAGE.contains(flag + " ") || Main.USAGE.contains(flag + "]") || Main.USAGE.contains(flag + "|"),
          "moe-router --help lacks " + flag);
      assertTrue(help.contains("  " + flag + " "), "demo --help does not describe " + flag);
    }
    assertUsageError("unknown option --layer\n", "demo", "--layer", "2");
  }

  @Test
  void aRepeatedOptionIsAnErrorNotLastWins() throws Exception {
    Path l = dir.resolve("l.npy");
    Npy.write(l, new float[4 * 8], 4, 8);
    assertUsageError("option --topk given twice\n", "route", "--logits", l.toString(), "--score", "softmax", "--topk",
        "2", "--topk", "3", "--out", dir.resolve("o").toString());
    assertUsageError("option --pre-softmax given twice\n", "route", "--pre-softmax", "--pre-softmax", "--logits",
        l.toString());
    assertUsageError("option --layers given twice\n", "demo", "--layers", "1", "--layers=2");
    assertUsageError("option --model given twice\n", "trace", "convert", "a.npy", "b.safetensors", "--model", "x",
        "--model", "y");
  }

  @Test
  void zeroGroupsAreRejectedAtTheCommandLine() throws Exception {
    Path l = dir.resolve("l.npy");
    Npy.write(l, new float[4 * 8], 4, 8);
    for (String[] g : new String[][] {{"0", "0"}, {"0", "1"}, {"2", "0"}}) {
      MainTest.Run r = assertUsageError("--group", "route", "--logits", l.toString(), "--score", "softmax", "--topk", "2",
          "--groups", g[0], "--group-topk", g[1], "--out", dir.resolve("o").toString());
      assertTrue(r.err.contains("must be >= 1, got 0"), r.err);
    }
    assertFalse(Files.exists(dir.resolve("o")));
  }

  /** Usage errors, bad files and runtime failures of every command start the same way. */
  @Test
  void everyErrorStartsWithTheSamePrefix() throws Exception {
    Path bad = dir.resolve("bad.npy");
    Files.writeString(bad, "not numpy");
    String[][] cases = {{"frobnicate"}, {"route", "--nope"}, {"route", "--logits", bad.toString(), "--score", "softmax",
        "--topk", "2", "--out", dir.toString()}, {"demo", "--layers", "0"}, {"trace", "frobnicate"},
        {"trace", "inspect", bad.toString()}, {"trace", "inspect", dir.resolve("missing.safetensors").toString()},
        {"trace", "convert", "a.txt", "b.txt"}, {"info", "extra"}};
    for (String[] c : cases) {
      MainTest.Run r = run(c);
      assertTrue(r.status == 1 || r.status == 2, String.join(" ", c));
      assertTrue(r.err.startsWith("moe-router: error: "), String.join(" ", c) + ": " + r.err);
      assertFalse(r.err.contains("\tat "), "no stack trace: " + r.err);
    }
  }

  // ------------------------------------------------------------------ timing, progress, launcher

  // What route's printed time covers: RouteTimingTest (a virtual clock, not a threshold).

  @Test
  void demoPrintsProgressLinesWhenStderrIsNotATerminal() {
    MainTest.Run r = run("demo", "--layers", "2", "--tokens", "256", "--hidden", "32", "--out",
        dir.resolve("demo").toString());
    assertEquals(0, r.status, r.err);
    for (String phase : new String[] {"simulating layers 2/2", "inference rollout 2/2", "training forward 2/2",
        "timing live vs replay 18/18"})
      assertTrue(r.err.contains("moe-router demo: " + phase + "\n"), r.err);
    assertFalse(r.err.contains("\r"), "no terminal redraws in a log");
    MainTest.Run quiet = run("demo", "--layers", "2", "--tokens", "256", "--hidden", "32", "--no-progress", "--out",
        dir.resolve("demo").toString());
    assertEquals("", quiet.err);
  }

  @Test
  void theLauncherRunsJavaFromJavaHome() throws Exception {
    Path script = Paths.get("..", "scripts", "moe-router").toAbsolutePath().normalize();
    Assumptions.assumeTrue(Files.isRegularFile(script), "launcher not found at " + script);
    Path fakeJdk = dir.resolve("fake-jdk");
    Files.createDirectories(fakeJdk.resolve("bin"));
    Path java = fakeJdk.resolve("bin/java");
    Files.writeString(java, "#!/bin/sh\necho \"fake java: $*\"\n");
    Files.setPosixFilePermissions(java, PosixFilePermissions.fromString("rwxr-xr-x"));
    String out = launch(script, Map.of("JAVA_HOME", fakeJdk.toString(), "MOE_ROUTER_CLASSPATH", "classes"), 0);
    assertTrue(out.startsWith("fake java: "), out);
    assertTrue(out.contains("-cp classes org.moerouter.cli.Main --version"), out);
    String missing = launch(script, Map.of("JAVA_HOME", dir.resolve("no-jdk").toString(), "MOE_ROUTER_CLASSPATH",
        "classes"), 127);
    assertTrue(missing.startsWith("moe-router: error: JAVA_HOME=" + dir.resolve("no-jdk") + " has no bin/java"), missing);
  }

  static String launch(Path script, Map<String, String> env, int status) throws Exception {
    ProcessBuilder pb = new ProcessBuilder("bash", script.toString(), "--version").redirectErrorStream(true);
    pb.environment().putAll(env);
    Process p = pb.start();
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    p.getInputStream().transferTo(out);
    assertTrue(p.waitFor(30, TimeUnit.SECONDS));
    String text = out.toString(StandardCharsets.UTF_8);
    assertEquals(status, p.exitValue(), text);
    return text;
  }
}
