// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The expert bias changing while other threads route on the same router (MoeRouter's threading contract):
 * every routing call uses exactly one bias version for all its rows, one that was current at some moment
 * during the call and not older than the last change completed before the call started.
 *
 * <p>Three bias version classes with very different routings: version 0 is "no bias" (ranked by logit,
 * top-4 anywhere), odd versions put +8 on experts 0..3 and -8 on 60..63 (every row picks 0..3), even ones
 * the mirror (every row picks 60..63). A flipper thread moves from version to version (setExpertBias, or
 * updateExpertBias with counts that give the same biases) while two threads route T = 16384 rows (the CPU
 * pool splits that into many chunks; the Java backend reads the bias per row), and each output must be
 * bit-identical to the full result of one version current at some moment of the call. The old native
 * code updated the bias in place, so a call in flight ranked some rows with one version and some with
 * another.
 */
class BiasConcurrencyTest {
  static final int E = 64, K = 4, T = 16384;
  static final float BOOST = 8f;
  static final RouterConfig CONFIG = RouterConfig.builder(E, K).scoreFunction(ScoreFunction.SIGMOID).build();

  /** How the flipper changes the bias: setExpertBias, or updateExpertBias (the balancing step). */
  enum Change { SET, UPDATE }

  @ParameterizedTest(name = "{0}")
  @EnumSource(names = {"JAVA", "CPU"})
  @Timeout(value = 300, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
  void setExpertBiasNeverMixesVersionsWithinACall(Backend backend) throws Exception {
    race(backend, Change.SET);
  }

  @ParameterizedTest(name = "{0}")
  @EnumSource(names = {"JAVA", "CPU"})
  @Timeout(value = 300, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
  void updateExpertBiasNeverMixesVersionsWithinACall(Backend backend) throws Exception {
    race(backend, Change.UPDATE);
  }

  /** CUDA through the host-array calls (the staged path); skipped without a device. */
  @Test
  @Tag("gpu")
  @Timeout(value = 300, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
  void cudaHostCallsNeverMixVersions() throws Exception {
    String why = MoeRouter.unavailableReason(Backend.CUDA);
    if (why != null && Boolean.getBoolean("moerouter.requireGpu")) fail("moerouter.requireGpu=true but " + why);
    Assumptions.assumeTrue(why == null, () -> "CUDA backend unavailable: " + why);
    race(Backend.CUDA, Change.SET);
  }

  /** The bias of version v: none for 0, +8 on experts 0..3 and -8 on 60..63 when odd, the mirror when even. */
  static float[] biasOf(int v) {
    if (v == 0) return null;
    float[] b = new float[E];
    for (int j = 0; j < K; j++) {
      b[j] = v % 2 == 1 ? BOOST : -BOOST;
      b[E - 1 - j] = -b[j];
    }
    return b;
  }

  /**
   * updateExpertBias counts (mean 10) that move the bias from version v - 1 to version v with rate
   * {@link #rateTo}: experts 0..3 and 60..63 under- or over-loaded, the others exactly at the mean (no change).
   */
  static int[] countsTo(int v) {
    int[] c = new int[E];
    Arrays.fill(c, 10);
    for (int j = 0; j < K; j++) {
      c[j] = v % 2 == 1 ? 0 : 20;
      c[E - 1 - j] = 20 - c[j];
    }
    return c;
  }

  static float rateTo(int v) {
    return v == 1 ? BOOST : 2 * BOOST;  // from none (zeros) the first step is half as long
  }

  static void change(MoeRouter router, Change change, int v) {
    if (change == Change.SET) router.setExpertBias(biasOf(v));
    else assertArrayEquals(biasOf(v), router.updateExpertBias(countsTo(v), rateTo(v)), "bias after update " + v);
  }

  /** Full expected outputs of each version class (computed on fresh routers of the same backend). */
  static final class Expected {
    final int[][] idx = new int[3][];
    final float[][] w = new float[3][];

    /** The version class (0 none, 1 odd, 2 even) whose result this is, or -1. */
    int match(int[] gotIdx, float[] gotW) {
      for (int c = 0; c < 3; c++) if (Arrays.equals(idx[c], gotIdx) && Arrays.equals(w[c], gotW)) return c;
      return -1;
    }
  }

  static int versionClass(int v) {
    return v == 0 ? 0 : v % 2 == 1 ? 1 : 2;
  }

  static void race(Backend backend, Change change) throws Exception {
    String why = MoeRouter.unavailableReason(backend);
    Assumptions.assumeTrue(why == null || backend == Backend.CPU, () -> backend + " unavailable: " + why);
    float[] logits = ReplayTest.logits(T, E, 23);
    Expected ex = new Expected();
    for (int v = 0; v < 3; v++) {
      float[] b = biasOf(v);
      RouterConfig c = b == null ? CONFIG : CONFIG.toBuilder().expertBias(b).build();
      try (MoeRouter r = MoeRouter.create(c, backend)) {
        ex.idx[v] = new int[T * K];
        ex.w[v] = new float[T * K];
        r.route(logits, T, ex.idx[v], ex.w[v]);
      }
    }
    for (int a = 0; a < 3; a++)
      for (int b = a + 1; b < 3; b++)
        for (int t = 0; t < T; t++)  // every row tells the versions apart, so a mixed call cannot pass
          if (Arrays.equals(ex.idx[a], t * K, t * K + K, ex.idx[b], t * K, t * K + K)
              && Arrays.equals(ex.w[a], t * K, t * K + K, ex.w[b], t * K, t * K + K))
            fail("versions " + a + " and " + b + " route row " + t + " alike: the test cannot see a mix there");

    final int callers = 2;
    final int callsPerCaller = backend == Backend.JAVA ? 6 : 30;
    final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    AtomicInteger started = new AtomicInteger(), completed = new AtomicInteger();
    AtomicBoolean done = new AtomicBoolean();
    ExecutorService pool = Executors.newFixedThreadPool(callers + 1);
    try (MoeRouter router = MoeRouter.create(CONFIG, backend)) {
      CountDownLatch go = new CountDownLatch(callers + 1);
      Future<Integer> flipper = pool.submit(() -> {
        go.countDown();
        go.await();
        int v = 0;
        while (!done.get()) {
          started.set(++v);  // a single writer: started and completed only grow
          change(router, change, v);
          completed.set(v);
        }
        return v;
      });
      List<Future<String>> calls = new ArrayList<>();
      for (int c = 0; c < callers; c++)
        calls.add(pool.submit(() -> {
          int[] idx = new int[T * K];
          float[] w = new float[T * K];
          go.countDown();
          go.await();
          for (int n = 0; n < callsPerCaller && System.nanoTime() < deadline; n++) {
            int before = completed.get();
            router.route(logits, T, idx, w);
            int after = started.get();
            int got = ex.match(idx, w);
            if (got < 0) return "call " + n + " mixes bias versions: " + describe(ex, idx, w);
            boolean allowed = false;
            for (int v = before; v <= after && !allowed; v++) allowed = versionClass(v) == got;
            if (!allowed)
              return "call " + n + " used version class " + got + " but only versions " + before + ".." + after
                  + " were current during it";
          }
          return null;
        }));
      List<String> failures = new ArrayList<>();
      for (Future<String> f : calls) {
        String r = f.get();
        if (r != null) failures.add(r);
      }
      done.set(true);
      int flips = flipper.get();
      assertEquals(List.of(), failures, backend + " " + change + " (" + flips + " bias changes)");

      // Sequential: the first call after a change returns sees it.
      int[] idx = new int[T * K];
      float[] w = new float[T * K];
      for (int v = flips + 1; v <= flips + 2; v++) {
        change(router, change, v);
        router.route(logits, T, idx, w);
        assertArrayEquals(ex.idx[versionClass(v)], idx, "indices right after version " + v);
        assertArrayEquals(ex.w[versionClass(v)], w, "weights right after version " + v);
      }
    } finally {
      done.set(true);
      pool.shutdownNow();
    }
  }

  /** Which rows follow which version: a summary for the failure message. */
  static String describe(Expected ex, int[] idx, float[] w) {
    int[] rows = new int[4];
    int firstOther = -1;
    for (int t = 0; t < T; t++) {
      int c = 3;
      for (int v = 0; v < 3 && c == 3; v++)
        if (Arrays.equals(ex.idx[v], t * K, t * K + K, idx, t * K, t * K + K)
            && Arrays.equals(ex.w[v], t * K, t * K + K, w, t * K, t * K + K))
          c = v;
      rows[c]++;
      if (c == 3 && firstOther < 0) firstOther = t;
    }
    return "rows of version class none/odd/even/neither: " + Arrays.toString(rows)
        + (firstOther >= 0 ? " (first row of neither: " + firstOther + ")" : "");
  }
}
