// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** The CPU backend's one worker pool per process: thread counts, sizing, concurrent callers. */
@ExtendWith(RestoreCpuThreads.class)
class CpuPoolTest {
  static final int E = 64, K = 6;
  static final int TOKENS = 2048;  // 128 Ki logits: above the parallel threshold
  static final RouterConfig CONFIG = RouterConfig.builder(E, K).build();
  static final Path TASKS = Paths.get("/proc/self/task");

  /** All OS threads of this process, and those named by the pool. */
  static int[] threads() throws IOException {
    int all = 0, pool = 0;
    try (Stream<Path> tasks = Files.list(TASKS)) {
      for (Path t : (Iterable<Path>) tasks::iterator) {
        all++;
        try {
          if (Files.readString(t.resolve("comm"), StandardCharsets.UTF_8).trim().equals("moe-router-cpu")) pool++;
        } catch (IOException gone) {
          // the thread exited while we listed
        }
      }
    }
    return new int[] {all, pool};
  }

  static void routeLarge(MoeRouter r, float[] logits) {
    r.route(logits, TOKENS, new int[TOKENS * K], new float[TOKENS * K]);
  }

  @Test
  void fiftyEightRoutersShareOnePoolOfTheConfiguredSize() throws Exception {
    Assumptions.assumeTrue(Files.isDirectory(TASKS), "needs /proc/self/task (Linux)");
    float[] logits = ReplayTest.logits(TOKENS, E, 1);
    MoeRouter.setCpuThreads(3);
    try (MoeRouter warm = MoeRouter.create(CONFIG, Backend.CPU)) {
      routeLarge(warm, logits);  // starts the pool and the Cleaner thread before the baseline
    }
    int[] before = threads();
    List<MoeRouter> layers = new ArrayList<>();
    try {
      for (int l = 0; l < 58; l++) {  // DeepSeek-V3: 58 MoE layers
        MoeRouter r = MoeRouter.create(CONFIG, Backend.CPU);
        layers.add(r);
        routeLarge(r, logits);
      }
      int[] after = threads();
      // Slack for threads the JVM may start on its own (JIT compiler threads); a pool per router was +58.
      assertTrue(after[0] - before[0] <= 4, "OS threads: " + before[0] + " before, " + after[0] + " after 58 routers");
      assertEquals(2, after[1], "pool workers for 3 threads per call (the caller is the third), after 58 routers");
    } finally {
      for (MoeRouter r : layers) r.close();
    }
  }

  @Test
  void theThreadCountCanBeChangedBetweenAndDuringCalls() throws Exception {
    Assumptions.assumeTrue(Files.isDirectory(TASKS), "needs /proc/self/task (Linux)");
    float[] logits = ReplayTest.logits(TOKENS, E, 2);
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.CPU)) {
      for (int n : new int[] {4, 1, 2, 5}) {
        MoeRouter.setCpuThreads(n);
        assertEquals(n, MoeRouter.cpuThreads());
        routeLarge(r, logits);
        assertEquals(n - 1, threads()[1], "pool workers for " + n + " threads per call");
      }
    }
    MoeRouterTest.assertInvalid(() -> MoeRouter.setCpuThreads(0), "CPU threads must be >= 1");
  }

  /** Callers on several Java threads (one pool, so all but one run serially at a time) get exact results. */
  @Test
  void concurrentCallersOnManyRoutersGetTheSameResultsAsOneCaller() throws Exception {
    int callers = 4, rounds = 6;
    MoeRouter.setCpuThreads(Math.max(2, Runtime.getRuntime().availableProcessors()));
    RouterConfig grouped = RouterConfig.builder(E, K).scoreFunction(ScoreFunction.SIGMOID)
        .expertBias(ReplayTest.logits(1, E, 9)).groups(8, 2).build();
    float[][] logits = new float[callers][];
    int[][] refIdx = new int[callers][];
    float[][] refW = new float[callers][];
    float[][] refGrad = new float[callers][];
    float[] dw = ReplayTest.logits(TOKENS, K, 4);
    try (MoeRouter java = MoeRouter.create(grouped, Backend.JAVA)) {
      for (int c = 0; c < callers; c++) {
        logits[c] = ReplayTest.logits(TOKENS, E, 100 + c);
        refIdx[c] = new int[TOKENS * K];
        refW[c] = new float[TOKENS * K];
        refGrad[c] = new float[TOKENS * E];
        java.route(logits[c], TOKENS, refIdx[c], refW[c]);
        java.backward(logits[c], TOKENS, refIdx[c], dw, refGrad[c]);
      }
    }
    ExecutorService pool = Executors.newFixedThreadPool(callers);
    try (MoeRouter shared = MoeRouter.create(grouped, Backend.CPU)) {
      List<Future<?>> futures = new ArrayList<>();
      for (int c = 0; c < callers; c++) {
        final int id = c;
        futures.add(pool.submit(() -> {
          try (MoeRouter own = MoeRouter.create(grouped, Backend.CPU)) {
            for (int round = 0; round < rounds; round++) {
              MoeRouter r = round % 2 == 0 ? own : shared;
              int[] idx = new int[TOKENS * K];
              float[] w = new float[TOKENS * K];
              float[] grad = new float[TOKENS * E];
              r.route(logits[id], TOKENS, idx, w);
              assertArrayEquals(refIdx[id], idx, "caller " + id + " round " + round + ": indices");
              assertArrayEquals(refW[id], w, 0f, "caller " + id + " round " + round + ": weights");
              r.backward(logits[id], TOKENS, idx, dw, grad);
              assertArrayEquals(refGrad[id], grad, 0f, "caller " + id + " round " + round + ": gradients");
            }
          }
          return null;
        }));
      }
      for (Future<?> f : futures) f.get();
    } finally {
      pool.shutdownNow();
    }
  }

  @Test
  void theDefaultComesFromTheJvmsProcessorCountOrAProperty() throws Exception {
    ChildJvm.Result r = ChildJvm.run(ChildJvm.currentJava(), List.of("-XX:ActiveProcessorCount=3",
        "--enable-native-access=ALL-UNNAMED"), PrintCpuThreads.class.getName());
    assertEquals(0, r.status, r.toString());
    assertEquals("cpuThreads=3", r.out.trim(), r.toString());
    r = ChildJvm.run(ChildJvm.currentJava(), List.of("-XX:ActiveProcessorCount=3", "-Dmoerouter.threads=5",
        "--enable-native-access=ALL-UNNAMED"), PrintCpuThreads.class.getName());
    assertEquals("cpuThreads=5", r.out.trim(), r.toString());
  }

  /** Child JVM main for the test above. */
  static final class PrintCpuThreads {
    public static void main(String[] args) {
      System.out.println("cpuThreads=" + MoeRouter.cpuThreads());
    }
  }
}
