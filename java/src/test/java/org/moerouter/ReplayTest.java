// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Replay semantics (spec section 4) on every host backend. */
class ReplayTest {
  static final RouterConfig GROUPED = RouterConfig.builder(64, 6).scoreFunction(ScoreFunction.SIGMOID)
      .expertBias(BackendEquivalenceTest.randomBias(new SplittableRandom(1), 64)).groups(8, 2).scale(1.5f).build();

  static float[] logits(int tokens, int experts, long seed) {
    SplittableRandom rnd = new SplittableRandom(seed);
    float[] l = new float[tokens * experts];
    for (int i = 0; i < l.length; i++) l[i] = (float) rnd.nextGaussian();
    return l;
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void replayingLiveIndicesReproducesLiveWeightsExactly(Backend backend) {
    for (RouterConfig c : new RouterConfig[] {GROUPED, RouterConfig.builder(96, 8).build(),
        RouterConfig.builder(40, 5).preSoftmax(true).build()}) {
      float[] l = logits(300, c.experts(), 3);
      try (MoeRouter r = MoeRouter.create(c, backend)) {
        RoutingResult live = r.route(l, 300);
        RoutingResult replay = r.replay(l, 300, live.indices(), null);
        assertArrayEquals(live.indices(), replay.indices());
        assertArrayEquals(live.weights(), replay.weights(), 0f, "bit-identical weights for " + c);
      }
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void maskedRowsAreRoutedLive(Backend backend) {
    int t = 50, k = GROUPED.topK();
    float[] l = logits(t, 64, 5);
    try (MoeRouter r = MoeRouter.create(GROUPED, backend)) {
      RoutingResult live = r.route(l, t);
      int[] forced = TestData.randomSelection(new SplittableRandom(9), t, k, 64);
      RoutingResult full = r.replay(l, t, forced, null);
      byte[] mask = new byte[t];
      for (int i = 0; i < t; i += 2) mask[i] = 1;
      RoutingResult partial = r.replay(l, t, forced, mask);
      for (int i = 0; i < t; i++) {
        RoutingResult expected = mask[i] != 0 ? full : live;
        for (int j = 0; j < k; j++) {
          assertEquals(expected.expert(i, j), partial.expert(i, j), "row " + i);
          assertEquals(expected.weight(i, j), partial.weight(i, j), 0f, "row " + i);
        }
      }
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void invalidReplayIsRejectedAndLeavesOutputsUntouched(Backend backend) {
    int t = 40, k = GROUPED.topK();
    float[] l = logits(t, 64, 11);
    try (MoeRouter r = MoeRouter.create(GROUPED, backend)) {
      int[] good = r.route(l, t).indices();
      int[] outIdx = new int[t * k];
      float[] outW = new float[t * k];

      int[] outOfRange = good.clone();
      outOfRange[17 * k + 2] = 64;
      assertRejected(r, l, t, outOfRange, null, outIdx, outW, "row 17", "out of range");

      int[] negative = good.clone();
      negative[3 * k] = -1;
      assertRejected(r, l, t, negative, null, outIdx, outW, "row 3", "out of range");

      int[] duplicate = good.clone();
      duplicate[25 * k + 4] = duplicate[25 * k + 1];
      duplicate[30 * k + 4] = duplicate[30 * k + 1];
      assertRejected(r, l, t, duplicate, null, outIdx, outW, "row 25", "appears twice");

      // A bad row under mask 0 is routed live, so it is not an error.
      byte[] mask = new byte[t];
      Arrays.fill(mask, (byte) 1);
      mask[17] = 0;
      r.replay(l, t, outOfRange, mask, outIdx, outW);
      assertEquals(good[17 * k], outIdx[17 * k]);
    }
  }

  /**
   * Every slot and every pair of slots of a row of k = 1..16 indices (the native check reads such rows as one
   * or two vectors of 8: pairs within each and across both), in a row far enough into the call that valid
   * rows come before it: an out-of-range index or a duplicate is rejected naming that row.
   */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void everySlotAndPairOfARowIsChecked(Backend backend) {
    int t = 24, bad = 19, e = 40;
    float[] l = logits(t, e, 13);
    int[] outIdx = new int[t * 16];
    float[] outW = new float[t * 16];
    for (int k : new int[] {1, 7, 8, 9, 12, 16}) {
      try (MoeRouter r = MoeRouter.create(RouterConfig.builder(e, k).build(), backend)) {
        int[] good = r.route(l, t).indices();
        int[] o = Arrays.copyOf(outIdx, t * k);
        float[] w = Arrays.copyOf(outW, t * k);
        assertArrayEquals(good, r.replay(l, t, good, null).indices(), "k=" + k + ": valid rows replay");
        for (int a = 0; a < k; a++) {
          for (int v : new int[] {e, -2, Integer.MIN_VALUE}) {
            int[] rep = good.clone();
            rep[bad * k + a] = v;
            assertRejected(r, l, t, rep, null, o, w, "row " + bad, "out of range");
          }
          for (int b = a + 1; b < k; b++) {
            int[] rep = good.clone();
            rep[bad * k + b] = rep[bad * k + a];
            assertRejected(r, l, t, rep, null, o, w, "row " + bad, "appears twice");
          }
        }
      }
    }
  }

  static void assertRejected(MoeRouter r, float[] l, int t, int[] replay, byte[] mask, int[] outIdx, float[] outW,
      String row, String reason) {
    Arrays.fill(outIdx, -99);
    Arrays.fill(outW, -99f);
    MoeRouterException e = assertThrows(MoeRouterException.class, () -> r.replay(l, t, replay, mask, outIdx, outW));
    assertEquals(Status.INVALID_REPLAY, e.status());
    assertTrue(e.getMessage().contains(row), e.getMessage());
    assertTrue(e.getMessage().toLowerCase().contains(reason), e.getMessage());
    assertTrue(Arrays.stream(outIdx).allMatch(x -> x == -99), "indices written by a rejected call");
    for (float w : outW) assertEquals(-99f, w, "weights written by a rejected call");
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void backwardRejectsInvalidIndicesWithoutWriting(Backend backend) {
    int t = 8, k = GROUPED.topK();
    float[] l = logits(t, 64, 2);
    try (MoeRouter r = MoeRouter.create(GROUPED, backend)) {
      int[] idx = r.route(l, t).indices();
      idx[5 * k + 1] = idx[5 * k];
      float[] grad = new float[t * 64];
      Arrays.fill(grad, 42f);
      MoeRouterException e = assertThrows(MoeRouterException.class,
          () -> r.backward(l, t, idx, new float[t * k], grad));
      assertEquals(Status.INVALID_REPLAY, e.status());
      assertTrue(e.getMessage().contains("row 5"), e.getMessage());
      for (float g : grad) assertEquals(42f, g);
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void replayReadsOnlyTheReplayedLogitsForPostSoftmaxAndSigmoid(Backend backend) {
    // Poison every logit the replay must not read: the weights must not notice.
    int t = 20, k = 4, e = 32;
    RouterConfig softmax = RouterConfig.builder(e, k).build();
    RouterConfig sigmoid = RouterConfig.builder(e, k).scoreFunction(ScoreFunction.SIGMOID).build();
    for (RouterConfig c : new RouterConfig[] {softmax, sigmoid}) {
      float[] l = logits(t, e, 4);
      int[] forced = TestData.randomSelection(new SplittableRandom(4), t, k, e);
      try (MoeRouter r = MoeRouter.create(c, backend)) {
        RoutingResult clean = r.replay(l, t, forced, null);
        float[] poisoned = l.clone();
        boolean[] used = new boolean[l.length];
        for (int i = 0; i < t; i++) for (int j = 0; j < k; j++) used[i * e + forced[i * k + j]] = true;
        for (int i = 0; i < l.length; i++) if (!used[i]) poisoned[i] = Float.NaN;
        RoutingResult res = r.replay(poisoned, t, forced, null);
        assertArrayEquals(clean.weights(), res.weights(), 0f, c.toString());
        assertEquals(0, res.nonfiniteRows(), "replay must not count logits it does not read");
      }
    }
  }
}
