// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * The pool's hand-off rules (docs/cpu-design.md, "Pool hand-off"): calls at every chunk and threshold edge give
 * the Java reference's bits on 2 and 3 threads, the first bad replay row is named whichever chunk finds it,
 * MOE_ROUTER_CPU_SPIN_US is parsed strictly (a bad value falls back to the default, with a warning), and an idle
 * process's workers sleep once the spin bound has passed.
 */
@ExtendWith(RestoreCpuThreads.class)
class CpuPoolHandOffTest {
  static final int E = 64, K = 6;
  static final RouterConfig CONFIG = RouterConfig.builder(E, K).build();
  // E = 64: live calls go on the pool from 512 rows (32 Ki logits) in chunks of 128, replay from 2048 rows in
  // chunks of 256, replay validation from 16384 rows in chunks of 4096; each edge, one below and one above.
  static final int[] EDGE_TOKENS = {1, 127, 128, 129, 255, 256, 257, 511, 512, 513, 767, 768, 769, 2047, 2048, 2049,
      2303, 2304, 2305, 16383, 16384, 16385};

  @Test
  void everyChunkAndThresholdEdgeGivesTheJavaBits() {
    try (MoeRouter java = MoeRouter.create(CONFIG, Backend.JAVA); MoeRouter cpu = MoeRouter.create(CONFIG, Backend.CPU)) {
      for (int threads : new int[] {2, 3}) {
        MoeRouter.setCpuThreads(threads);
        for (int t : EDGE_TOKENS) {
          String where = threads + " threads, T = " + t;
          float[] logits = ReplayTest.logits(t, E, 31L * t + threads);
          int[] refIdx = new int[t * K], idx = new int[t * K];
          float[] refW = new float[t * K], w = new float[t * K];
          java.route(logits, t, refIdx, refW);
          cpu.route(logits, t, idx, w);
          assertArrayEquals(refIdx, idx, where + ": live indices");
          assertArrayEquals(refW, w, 0f, where + ": live weights");
          // Replay of a permutation of the live choice (other weights than live), and the backward.
          int[] replayIdx = refIdx.clone();
          for (int r = 0; r < t; r++) {
            int first = replayIdx[r * K];
            System.arraycopy(replayIdx, r * K + 1, replayIdx, r * K, K - 1);
            replayIdx[r * K + K - 1] = first;
          }
          java.replay(logits, t, replayIdx, null, refIdx, refW);
          Arrays.fill(w, -1f);
          cpu.replay(logits, t, replayIdx, null, idx, w);
          assertArrayEquals(refIdx, idx, where + ": replay indices");
          assertArrayEquals(refW, w, 0f, where + ": replay weights");
          float[] dw = ReplayTest.logits(t, K, 7L * t), refGrad = new float[t * E], grad = new float[t * E];
          java.backward(logits, t, replayIdx, dw, refGrad);
          cpu.backward(logits, t, replayIdx, dw, grad);
          assertArrayEquals(refGrad, grad, 0f, where + ": gradients");
        }
      }
    }
  }

  /** Validation runs in chunks of 4096 rows on the pool (from 16384 rows): the lowest bad row wins, nothing is written. */
  @Test
  void theFirstBadReplayRowIsNamedWhicheverChunkHoldsIt() {
    int t = 16385;
    float[] logits = ReplayTest.logits(t, E, 5);
    try (MoeRouter cpu = MoeRouter.create(CONFIG, Backend.CPU)) {
      int[] good = new int[t * K];
      cpu.route(logits, t, good, new float[t * K]);
      for (int threads : new int[] {2, 3}) {
        MoeRouter.setCpuThreads(threads);
        for (int[] badRows : new int[][] {{16384}, {16384, 8192}, {4097, 4095}, {0, 16384}, {12288}}) {
          int[] bad = good.clone();
          for (int row : badRows) bad[row * K + 1] = E + row % 5;  // out of range
          int first = Arrays.stream(badRows).min().getAsInt();
          String where = threads + " threads, bad rows " + Arrays.toString(badRows);
          int[] idx = new int[t * K];
          float[] w = new float[t * K];
          Arrays.fill(idx, -7);
          Arrays.fill(w, -7f);
          MoeRouterException ex = assertThrows(MoeRouterException.class, () -> cpu.replay(logits, t, bad, null, idx, w), where);
          assertEquals(Status.INVALID_REPLAY, ex.status(), where);
          assertTrue(ex.getMessage().contains("row " + first + ":"), where + ": " + ex.getMessage());
          assertTrue(Arrays.stream(idx).allMatch(v -> v == -7), where + ": an index was written");
          for (float v : w) assertEquals(-7f, v, where + ": a weight was written");
        }
      }
    }
  }

  static final String WARNING = "MOE_ROUTER_CPU_SPIN_US=";

  @Test
  void aBadSpinBoundFallsBackToTheDefaultWithAWarningNamingIt() throws Exception {
    Map<String, Boolean> values = new LinkedHashMap<>();  // value -> accepted
    for (String bad : new String[] {"abc", "-1", "+5", "1.5", "", " 5", "12us", "1000001", "99999999999999999999999"})
      values.put(bad, false);
    for (String good : new String[] {"0", "1000000", "250", "007"}) values.put(good, true);
    Map<String, Process> children = new LinkedHashMap<>();
    Map<String, Path[]> files = new LinkedHashMap<>();
    try {
      for (String v : values.keySet()) {  // started together: a JVM start each, on a shared machine
        Path out = Files.createTempFile("spin", ".out"), err = Files.createTempFile("spin", ".err");
        files.put(v, new Path[] {out, err});
        children.put(v, child(Map.of("MOE_ROUTER_CPU_SPIN_US", v), out, err, "exact"));
      }
      for (Map.Entry<String, Process> c : children.entrySet()) {
        String v = c.getKey();
        String out = finish(c.getValue(), files.get(v)[0]), err = Files.readString(files.get(v)[1], StandardCharsets.UTF_8);
        String where = "MOE_ROUTER_CPU_SPIN_US=\"" + v + "\": out " + out + ", err " + err;
        assertEquals(0, c.getValue().exitValue(), where);
        assertEquals("exact", out.trim(), where);  // any value: the results stay exact
        if (values.get(v)) {
          assertFalse(err.contains(WARNING), where);
        } else {
          assertTrue(err.contains(WARNING + "\"" + v + "\" ignored: must be an integer number of microseconds "
              + "0..1000000; using the default 100"), where);
          assertEquals(err.indexOf(WARNING), err.lastIndexOf(WARNING), where + ": warned more than once");
        }
      }
    } finally {
      for (Process p : children.values()) p.destroyForcibly();
      for (Path[] f : files.values())
        for (Path p : f) Files.deleteIfExists(p);
    }
  }

  /**
   * After a parallel call the workers spin for the bound (default 100 µs), then sleep: over a second of idle
   * they use next to no CPU time. A worker that spun without bound would take a core's share of that second
   * (hundreds of milliseconds even on a loaded 2-core machine).
   */
  @Test
  void anIdleProcessDoesNotKeepItsWorkersSpinning() throws Exception {
    Assumptions.assumeTrue(Files.isDirectory(Paths.get("/proc/self/task")), "needs /proc/self/task (Linux)");
    for (Map<String, String> env : List.of(Map.<String, String>of(), Map.of("MOE_ROUTER_CPU_SPIN_US", "20000"))) {
      Path out = Files.createTempFile("idle", ".out"), err = Files.createTempFile("idle", ".err");
      try {
        Process p = child(env, out, err, "idle");
        String got = finish(p, out);
        String where = "env " + env + ": " + got + " / " + Files.readString(err, StandardCharsets.UTF_8);
        assertEquals(0, p.exitValue(), where);
        String[] f = got.trim().split(" ");
        assertEquals("idle", f[0], where);
        assertTrue(Integer.parseInt(f[1]) >= 1, where + ": no pool worker found");
        // CPU time in clock ticks (10 ms): the spin bound is at most 20 ms here, so a few ticks of slack.
        assertTrue(Long.parseLong(f[2]) <= 5, where + ": idle workers used " + f[2] + " ticks of CPU in 1 s");
      } finally {
        Files.deleteIfExists(out);
        Files.deleteIfExists(err);
      }
    }
  }

  static Process child(Map<String, String> env, Path out, Path err, String mode) throws IOException {
    List<String> cmd = new ArrayList<>(List.of(ChildJvm.currentJava().toString(), "--enable-native-access=ALL-UNNAMED"));
    String cache = System.getProperty("org.bytedeco.javacpp.cachedir");
    if (cache != null) cmd.add("-Dorg.bytedeco.javacpp.cachedir=" + cache);
    cmd.addAll(List.of("-cp", ChildJvm.classPath(CpuPoolHandOffTest.class), Child.class.getName(), mode));
    ProcessBuilder pb = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile());
    pb.environment().remove("MOE_ROUTER_CPU_SPIN_US");
    pb.environment().putAll(env);
    return pb.start();
  }

  static String finish(Process p, Path out) throws Exception {
    if (!p.waitFor(120, TimeUnit.SECONDS)) {
      p.destroyForcibly();
      throw new AssertionError("child JVM did not finish in 120 s");
    }
    return Files.readString(out, StandardCharsets.UTF_8);
  }

  /** CPU ticks (user + system) of this process's pool workers, and how many there are. */
  static long[] workerTicks() throws IOException {
    long ticks = 0, workers = 0;
    try (Stream<Path> tasks = Files.list(Paths.get("/proc/self/task"))) {
      for (Path t : (Iterable<Path>) tasks::iterator) {
        try {
          if (!Files.readString(t.resolve("comm"), StandardCharsets.UTF_8).trim().equals("moe-router-cpu")) continue;
          String stat = Files.readString(t.resolve("stat"), StandardCharsets.UTF_8);
          String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
          ticks += Long.parseLong(f[11]) + Long.parseLong(f[12]);  // utime, stime: fields 14 and 15
          workers++;
        } catch (IOException gone) {
          // the thread exited while we listed
        }
      }
    }
    return new long[] {ticks, workers};
  }

  /** Child JVM main: "exact" routes on 2 threads and compares with Java; "idle" also measures idle workers. */
  static final class Child {
    public static void main(String[] args) throws Exception {
      MoeRouter.setCpuThreads(2);
      int t = 4096;
      float[] logits = ReplayTest.logits(t, E, 11);
      int[] refIdx = new int[t * K], idx = new int[t * K];
      float[] refW = new float[t * K], w = new float[t * K];
      try (MoeRouter java = MoeRouter.create(CONFIG, Backend.JAVA); MoeRouter cpu = MoeRouter.create(CONFIG, Backend.CPU)) {
        java.route(logits, t, refIdx, refW);
        for (int i = 0; i < 20; i++) cpu.route(logits, t, idx, w);
        boolean exact = Arrays.equals(refIdx, idx) && Arrays.equals(refW, w);
        if (args[0].equals("exact")) {
          System.out.println(exact ? "exact" : "mismatch");
          return;
        }
        Thread.sleep(100);  // past any spin bound this test sets
        long[] before = workerTicks();
        Thread.sleep(1000);
        long[] after = workerTicks();
        System.out.println((exact ? "idle " : "mismatch ") + after[1] + " " + (after[0] - before[0]));
      }
    }
  }
}
