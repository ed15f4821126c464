// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Replay-row validation (spec section 4) at every position, in every chunk of a parallel call, and the
 * replay mask on every memory path. Issue 17: a check that skipped position k-1, a chunk-relative row
 * number, and routeHost ignoring the mask were all missed by the other tests.
 */
class ReplayValidationTest {

  /** Row r of a valid selection: k distinct experts that differ from row to row. */
  static int[] validRows(int tokens, int k, int e) {
    int[] idx = new int[tokens * k];
    for (int t = 0; t < tokens; t++)
      for (int j = 0; j < k; j++) idx[t * k + j] = (t * 3 + j * 5) % e;
    return idx;
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void aDuplicateAtEveryPositionIsRejectedBeforeAnyWrite(Backend backend) {
    // k <= 8 takes the CPU backend's lane-wise pre-check (rotations by 1..4), k > 8 the scalar check.
    final int e = 32, t = 3;
    for (int k : new int[] {2, 3, 5, 8, 9, 12}) {
      float[] l = ReplayTest.logits(t, e, k);
      try (MoeRouter r = MoeRouter.create(RouterConfig.builder(e, k).build(), backend)) {
        int[] good = validRows(t, k, e);
        // Sanity: the rows are valid (distinct experts), so only the planted duplicate can be rejected.
        r.replay(l, t, good, null, new int[t * k], new float[t * k]);
        for (int j = 1; j < k; j++)
          for (int m = 0; m < j; m++) {
            int[] bad = good.clone();
            bad[k + j] = bad[k + m];
            String where = backend + " k=" + k + " positions " + m + "," + j;
            int[] idx = new int[t * k];
            float[] w = new float[t * k];
            Arrays.fill(idx, -7);
            Arrays.fill(w, -7f);
            MoeRouterException ex = assertThrows(MoeRouterException.class,
                () -> r.replay(l, t, bad, null, idx, w), where);
            assertEquals(Status.INVALID_REPLAY, ex.status(), where);
            assertEquals("replay failed: invalid replay indices: row 1: expert " + bad[k + m] + " appears twice (positions "
                + m + " and " + j + ")", ex.getMessage(), where);
            for (int i = 0; i < idx.length; i++) {
              assertEquals(-7, idx[i], where + ": index written");
              assertEquals(-7f, w[i], where + ": weight written");
            }
            float[] grad = new float[t * e];
            Arrays.fill(grad, -7f);
            MoeRouterException bw = assertThrows(MoeRouterException.class,
                () -> r.backward(l, t, bad, new float[t * k], grad), where + " backward");
            assertEquals(Status.INVALID_REPLAY, bw.status(), where);
            assertFalse(bw.getMessage().indexOf("row 1: expert " + bad[k + m] + " appears twice") < 0, bw.getMessage());
            for (float g : grad) assertEquals(-7f, g, where + ": gradient written");
          }
      }
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void aBadRowInALaterChunkIsNamedByItsRowInTheCall(Backend backend) {
    // The CPU backend validates calls of 16384 rows and more on its pool, in chunks of 4096 rows
    // (kValidateParallelMinRows in moe_cpu.cpp): 5 chunks and more, the first bad row in the fourth, a later
    // bad row in the fifth, and a masked-out bad row in the first. k = 20 takes the scalar check (the vector
    // pre-check covers k <= 16), which names rows by their chunk's offset too.
    final int e = 64, t = 5 * 4096 + 500, bad = 3 * 4096 + 77, later = 4 * 4096 + 11, masked = 100;
    int saved = MoeRouter.cpuThreads();
    try {
      for (int threads : new int[] {1, 2, 4}) {
        MoeRouter.setCpuThreads(threads);
        for (int k : new int[] {6, 10, 20}) {
          String where = backend + " threads=" + threads + " k=" + k;
          float[] l = new float[t * e];
          int[] replay = validRows(t, k, e);
          replay[bad * k + k - 1] = replay[bad * k];
          replay[later * k + 2] = e;
          replay[masked * k + 1] = -3;
          byte[] mask = new byte[t];
          Arrays.fill(mask, (byte) 1);
          mask[masked] = 0;
          try (MoeRouter r = MoeRouter.create(RouterConfig.builder(e, k).build(), backend)) {
            MoeRouterException ex = assertThrows(MoeRouterException.class,
                () -> r.replay(l, t, replay, mask, new int[t * k], new float[t * k]), where);
            assertEquals("replay failed: invalid replay indices: row " + bad + ": expert " + replay[bad * k]
                + " appears twice (positions 0 and " + (k - 1) + ")", ex.getMessage(), where);
            replay[bad * k + k - 1] = firstUnused(replay, bad * k, k, e);
            ex = assertThrows(MoeRouterException.class,
                () -> r.replay(l, t, replay, mask, new int[t * k], new float[t * k]), where);
            assertEquals("replay failed: invalid replay indices: row " + later + ": expert " + e
                + " at position 2 is out of range [0, " + e + ")", ex.getMessage(), where);
            replay[later * k + 2] = firstUnused(replay, later * k, k, e);
            ex = assertThrows(MoeRouterException.class,
                () -> r.replay(l, t, replay, null, new int[t * k], new float[t * k]), where + " without the mask");
            assertEquals("replay failed: invalid replay indices: row " + masked + ": expert -3 at position 1 is out of "
                + "range [0, " + e + ")", ex.getMessage(), where);
            int[] idx = new int[t * k];
            r.replay(l, t, replay, mask, idx, new float[t * k]);
            for (int row : new int[] {0, bad, later, t - 1})
              assertArrayEquals(Arrays.copyOfRange(replay, row * k, row * k + k), Arrays.copyOfRange(idx, row * k, row * k + k),
                  where + " row " + row);
          }
        }
      }
    } finally {
      MoeRouter.setCpuThreads(saved);
    }
  }

  /** The smallest expert not in row [off, off + k) (the slot being replaced holds a duplicate or a bad value). */
  static int firstUnused(int[] idx, int off, int k, int e) {
    outer:
    for (int x = 0; x < e; x++) {
      for (int j = 0; j < k; j++) if (idx[off + j] == x) continue outer;
      return x;
    }
    throw new AssertionError("row full");
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void everyMemoryPathHonoursTheReplayMask(Backend backend) {
    // JavaCPP's Pointer natives (the address path) live in the router's JNI library: load it first.
    assertTrue(NativeLibrary.loaded(), () -> "native library: " + NativeLibrary.loadFailure());
    final int e = 32, k = 4, t = 9;
    SplittableRandom rnd = new SplittableRandom(17);
    float[] l = RoutingOptionsTest.eighths(rnd, t * e);
    int[] replay = TestData.randomSelection(rnd, t, k, e);
    byte[] mask = {1, 0, 1, 1, 0, 0, 1, 0, 1};
    replay[4 * k + 3] = replay[4 * k];  // masked out: neither checked nor used
    RouterConfig config = RouterConfig.builder(e, k).scoreFunction(ScoreFunction.SIGMOID).scale(2.5f).build();
    try (MoeRouter r = MoeRouter.create(config, backend)) {
      RoutingResult live = r.route(l, t);
      int[] forced = replay.clone();
      System.arraycopy(live.indices(), 4 * k, forced, 4 * k, k);
      RoutingResult replayed = r.replay(l, t, forced, null);
      int[] expIdx = new int[t * k];
      float[] expW = new float[t * k];
      for (int row = 0; row < t; row++) {
        RoutingResult src = mask[row] != 0 ? replayed : live;
        System.arraycopy(src.indices(), row * k, expIdx, row * k, k);
        System.arraycopy(src.weights(), row * k, expW, row * k, k);
        if (mask[row] == 0 && row != 4)
          assertFalse(Arrays.equals(Arrays.copyOfRange(replay, row * k, row * k + k),
              Arrays.copyOfRange(expIdx, row * k, row * k + k)), "row " + row + " must tell replay from live");
      }
      for (int p = 0; p < RoutingOptionsTest.PATHS.length; p++) {
        if (p == 1) continue;  // bf16 logits: another input, covered by RoutingOptionsTest
        String where = backend + ", " + RoutingOptionsTest.PATH_NAMES[p];
        int[] idx = new int[t * k];
        float[] w = new float[t * k];
        byte[] rows = new byte[t];
        assertEquals(0, RoutingOptionsTest.PATHS[p].run(r, l, t, replay, mask, idx, w, rows), where);
        assertArrayEquals(expIdx, idx, where + ": indices");
        assertArrayEquals(expW, w, 0f, where + ": weights");
      }
    }
  }
}
