// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** close() against calls in flight, calls after close, double close. */
class LifecycleTest {
  static final int E = 64, K = 6;
  static final RouterConfig CONFIG = RouterConfig.builder(E, K).build();

  /**
   * Several threads route, replay and run backward while the main thread closes the router, over many
   * rounds. Every call must either complete or throw the closed-router IllegalStateException; nothing
   * may crash the JVM or hang (the old NativeRouter freed the handle under a running call: SIGSEGV in
   * moe::cpu_route, or a hang in moe_router_destroy joining a busy pool).
   */
  @ParameterizedTest(name = "{0}")
  @EnumSource(names = {"JAVA", "CPU", "CUDA"})
  @Timeout(value = 180, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
  void closeRacingWithCallsNeitherCrashesNorHangs(Backend backend) throws Exception {
    assumeAvailable(backend);
    final int tokens = 1024;  // 64 Ki logits: above the CPU backend's threshold for using its pool
    final int rounds = backend == Backend.JAVA ? 60 : 300, callers = 3;
    float[] logits = ReplayTest.logits(tokens, E, 11);
    int[] recorded = new int[tokens * K];
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.JAVA)) {
      r.route(logits, tokens, recorded, new float[tokens * K]);
    }
    float[] gradW = new float[tokens * K];
    java.util.Arrays.fill(gradW, 0.5f);
    SplittableRandom rnd = new SplittableRandom(5);
    ExecutorService pool = Executors.newFixedThreadPool(callers);
    AtomicLong completed = new AtomicLong();
    try {
      for (int round = 0; round < rounds; round++) {
        MoeRouter router = MoeRouter.create(CONFIG, backend);
        CountDownLatch started = new CountDownLatch(callers);
        List<Future<String>> calls = new ArrayList<>();
        for (int c = 0; c < callers; c++) {
          final int kind = c;
          calls.add(pool.submit(() -> {
            int[] idx = new int[tokens * K];
            float[] w = new float[tokens * K];
            float[] grad = new float[tokens * E];
            started.countDown();
            for (int n = 0; ; n++) {
              try {
                switch ((kind + n) % 3) {
                  case 0: router.route(logits, tokens, idx, w); break;
                  case 1: router.replay(logits, tokens, recorded, null, idx, w); break;
                  default: router.backward(logits, tokens, recorded, gradW, grad); break;
                }
                completed.incrementAndGet();
              } catch (IllegalStateException e) {
                return e.getMessage().contains("closed") ? null : "unexpected message: " + e.getMessage();
              } catch (Throwable t) {
                return "call " + n + " threw " + t;
              }
            }
          }));
        }
        started.await();
        long spin = System.nanoTime() + rnd.nextInt(400_000);  // close at a random point of some call
        while (System.nanoTime() < spin) Thread.onSpinWait();
        router.close();
        for (Future<String> f : calls) {
          String problem;
          try {
            problem = f.get(30, TimeUnit.SECONDS);
          } catch (TimeoutException e) {
            throw new AssertionError(backend + " round " + round + ": a call did not return after close()");
          }
          if (problem != null) fail(backend + " round " + round + ": " + problem);
        }
      }
    } finally {
      pool.shutdownNow();
    }
    assertTrue(completed.get() >= rounds, "calls completed before close: " + completed.get());
  }

  static void assumeAvailable(Backend backend) {
    String why = MoeRouter.unavailableReason(backend);
    Assumptions.assumeTrue(why == null, () -> backend + " unavailable: " + why);
  }

  /** Every operation of a closed router fails the same way, whatever the backend or the arguments. */
  @ParameterizedTest(name = "{0}")
  @EnumSource(names = {"JAVA", "CPU", "CUDA"})
  void everyCallAfterCloseThrowsIllegalStateException(Backend backend) {
    assumeAvailable(backend);
    RouterConfig sigmoid = RouterConfig.builder(E, K).scoreFunction(ScoreFunction.SIGMOID).build();
    MoeRouter r = MoeRouter.create(sigmoid, backend);
    r.close();
    assertTrue(r.isClosed());
    r.close();  // idempotent
    int t = 2;
    float[] l = new float[t * E];
    int[] idx = {0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5};
    float[] w = new float[t * K];
    short[] half = new short[t * E];
    FloatBuffer lb = ByteBuffer.allocateDirect(4 * t * E).order(ByteOrder.nativeOrder()).asFloatBuffer();
    IntBuffer ib = ByteBuffer.allocateDirect(4 * t * K).order(ByteOrder.nativeOrder()).asIntBuffer();
    FloatBuffer wb = ByteBuffer.allocateDirect(4 * t * K).order(ByteOrder.nativeOrder()).asFloatBuffer();
    List<Map.Entry<String, Executable>> calls = new ArrayList<>();
    calls.add(Map.entry("route", () -> r.route(l, t, idx.clone(), w)));
    calls.add(Map.entry("route", () -> r.route(l, t)));
    calls.add(Map.entry("route", () -> r.route(half, LogitsType.BF16, t, idx.clone(), w)));
    calls.add(Map.entry("replay", () -> r.replay(l, t, idx, null, idx.clone(), w)));
    calls.add(Map.entry("replay", () -> r.replay(half, LogitsType.BF16, t, idx, null, idx.clone(), w)));
    calls.add(Map.entry("route", () -> r.route(lb, LogitsType.FP32, t, null, null, ib, wb)));
    calls.add(Map.entry("route", () -> r.routeAddress(1, LogitsType.FP32, 0, 0, 0, 0, 0)));
    calls.add(Map.entry("routeDevice", () -> r.routeDevice(0, LogitsType.FP32, 0, 0, 0, 0, 0, 0, 0)));
    calls.add(Map.entry("checkReplay", r::checkReplay));
    calls.add(Map.entry("backward", () -> r.backward(l, t, idx, w, new float[t * E])));
    calls.add(Map.entry("backward", () -> r.backward(half, LogitsType.FP16, t, idx, w, new float[t * E])));
    calls.add(Map.entry("backward", () -> r.backwardAddress(0, LogitsType.FP32, 0, 0, 0, 0)));
    calls.add(Map.entry("backwardDevice", () -> r.backwardDevice(0, LogitsType.FP32, 0, 0, 0, 0, 0)));
    calls.add(Map.entry("validTokensDevice", () -> r.validTokensDevice(0, LogitsType.FP32, 0, 0, 0, 0, 0)));
    calls.add(Map.entry("tokensPerExpertDevice", () -> r.tokensPerExpertDevice(0, 0, 0, 0, 0)));
    calls.add(Map.entry("tokensPerExpertMapDevice", () -> r.tokensPerExpertMapDevice(0, 0, 0, 0, 0)));
    calls.add(Map.entry("lossesWorkspaceBytes", () -> r.lossesWorkspaceBytes(0, LossConfig.builder().build(), false)));
    calls.add(Map.entry("lossesDevice", () -> r.lossesDevice(0, LogitsType.FP32, 0, 0, LossConfig.builder().build(), 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0)));
    calls.add(Map.entry("dropTokensWorkspaceBytes", () -> r.dropTokensWorkspaceBytes(0, DropPolicy.PROBS)));
    calls.add(Map.entry("dropTokensDevice", () -> r.dropTokensDevice(TokenDropping.of(1.0, DropPolicy.PROBS, false), 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0)));
    calls.add(Map.entry("tokensPerExpert", () -> r.tokensPerExpert(idx, t, new int[E])));
    calls.add(Map.entry("denseViews", () -> r.denseViews(idx, w, t, new byte[t * E], null)));
    calls.add(Map.entry("denseMapBits", () -> r.denseMapBits(idx, t, new long[t])));
    calls.add(Map.entry("auxLoss", () -> r.auxLoss(l, t, 1e-2f, null, null, null, null)));
    calls.add(Map.entry("auxLoss", () -> r.auxLoss(half, LogitsType.BF16, t, 1e-2f, null, null, null, null)));
    calls.add(Map.entry("zLoss", () -> r.zLoss(l, t, 1e-3f, null)));
    calls.add(Map.entry("zLoss", () -> r.zLoss(half, LogitsType.BF16, t, 1e-3f, null)));
    calls.add(Map.entry("updateExpertBias", () -> r.updateExpertBias(new int[E], 1e-3f)));
    calls.add(Map.entry("expertBias", r::expertBias));
    calls.add(Map.entry("setExpertBias", () -> r.setExpertBias(new float[E])));
    for (Map.Entry<String, Executable> c : calls) {
      IllegalStateException e = assertThrows(IllegalStateException.class, c.getValue(), backend + " " + c.getKey());
      assertTrue(e.getMessage().startsWith(c.getKey() + " failed: the router is closed"), e.getMessage());
    }
    assertEquals(backend, r.backend());
    assertSame(sigmoid, r.config());
  }

  /** A native router that is never closed is freed once unreachable (the Cleaner backstop). */
  @Test
  @Timeout(120)
  void unclosedNativeRoutersAreFreedAfterTheyBecomeUnreachable() throws InterruptedException {
    long before = NativeRouter.live();
    for (int i = 0; i < 40; i++) {
      MoeRouter r = MoeRouter.create(CONFIG, Backend.CPU);
      r.route(new float[E], 1);
    }
    assertTrue(NativeRouter.live() >= before + 40, "live native routers: " + NativeRouter.live());
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
    while (NativeRouter.live() > before && System.nanoTime() < deadline) {
      System.gc();
      Thread.sleep(20);
    }
    assertEquals(before, NativeRouter.live(), "unclosed native routers still allocated after 20 s of GC");
    // An explicit close and the Cleaner never both free: the count cannot go below the baseline.
    MoeRouter r = MoeRouter.create(CONFIG, Backend.CPU);
    r.close();
    r.close();
    assertEquals(before, NativeRouter.live());
  }
}
