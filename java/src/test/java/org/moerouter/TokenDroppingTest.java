// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Token dropping (spec section 6) rule by rule, and JAVA vs CPU bit for bit over random options. */
class TokenDroppingTest {
  /** Python's math.ceil of the float64 product: (100 * 1 / 2) * 1.1 is 55.00000000000001, so 56. */
  @Test
  void capacityIsTheFloat64CeilingOfMegatron() {
    assertEquals(5, TokenDropping.of(0.5, DropPolicy.POSITION, true).capacity(96, 3, 32));
    assertEquals(4, TokenDropping.of(1.0, DropPolicy.PROBS, false).capacity(16, 2, 8), "an exact product is not raised");
    assertEquals(56, TokenDropping.of(1.1, DropPolicy.PROBS, false).capacity(100, 1, 2), "float64 rounding, as Python");
    assertEquals(10, TokenDropping.of(100, DropPolicy.PROBS, false).capacity(10, 3, 4), "never above tokens");
    assertEquals(0, TokenDropping.of(1, DropPolicy.PROBS, false).capacity(0, 3, 4));
  }

  static int[] idx(int... rows) {
    return rows;
  }

  /**
   * One expert column decides: E = 2, k = 1, 6 tokens all routed to expert 0 except token 2, cap =
   * ceil(6 / 2 * cf). Weights tie at 0.5 for tokens 0, 3, 4 and token 5 is NaN.
   */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void probsKeepTheLargestWeightsWithTiesToTheLowerTokenAndNanLast(Backend backend) {
    RouterConfig c = RouterConfig.builder(2, 1).scoreFunction(ScoreFunction.SIGMOID).build();
    int[] idx = {0, 0, 1, 0, 0, 0};
    float[] w = {0.5f, 0.25f, 0.9f, 0.5f, 0.5f, Float.NaN};
    try (MoeRouter r = MoeRouter.create(c, backend)) {
      // cap 2: the two lowest tokens among the three tied at 0.5
      Result x = drop(r, TokenDropping.of(2 / 3.0, DropPolicy.PROBS, false), idx, w, 6);
      assertArrayEquals(new byte[] {1, 0, 1, 1, 0, 0}, x.kept, "kept (token 2 is alone on expert 1)");
      assertEquals(2, x.keptCounts[0]);
      // cap 5 with padding: 0, 3, 4, 1 by weight, then the zeros (token 2 is not routed to expert 0: prob 0),
      // and the NaN token ranks below them
      x = drop(r, TokenDropping.of(5 / 3.0, DropPolicy.PROBS, true), idx, w, 6);
      assertArrayEquals(new byte[] {1, 1, 1, 1, 1, 0}, x.kept);
      assertEquals(1, x.map[2 * 2], "token 2 is a padding slot of expert 0");
      assertEquals(0f, x.probs[2 * 2], "a padding slot has prob 0");
      assertEquals(0, x.map[5 * 2], "NaN ranks below a non-routed token");
      assertArrayEquals(new int[] {4, 1}, x.keptCounts);
      assertEquals(1, x.dropped);
    }
  }

  /** A routed weight of exactly 0 ties with the tokens not routed there: the lower index wins. */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void aZeroWeightTiesWithTokensNotRoutedThere(Backend backend) {
    RouterConfig c = RouterConfig.builder(2, 1).scoreFunction(ScoreFunction.SIGMOID).build();
    int[] idx = {1, 0, 0, 0};   // token 0 is on expert 1: prob 0 for expert 0
    float[] w = {0.7f, 0.8f, 0f, 0f};
    try (MoeRouter r = MoeRouter.create(c, backend)) {
      // cap = ceil(4 / 2 * 1.0) = 2: token 1 (0.8), then the lowest among tokens at 0 for expert 0: token 0
      Result x = drop(r, TokenDropping.of(1.0, DropPolicy.PROBS, false), idx, w, 4);
      assertArrayEquals(new byte[] {1, 1, 0, 0}, x.kept, "token 0 (not routed) took the slot from tokens 2 and 3");
      assertArrayEquals(new int[] {1, 1}, x.keptCounts);
      assertEquals(0, x.map[0], "without padding a non-routed token is not on the map");
      x = drop(r, TokenDropping.of(1.0, DropPolicy.PROBS, true), idx, w, 4);
      assertEquals(1, x.map[0], "with padding it is");
      assertEquals(0, x.map[2 * 2]);
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void positionKeepsTheFirstRoutedTokensThenPadsWithTheLowestOthers(Backend backend) {
    RouterConfig c = RouterConfig.builder(4, 2).build();
    int[] idx = {0, 1, 2, 0, 0, 3, 1, 0, 2, 3, 0, 1};  // expert 0: tokens 0, 1, 2, 3, 5; expert 2: tokens 1, 4
    float[] w = new float[12];
    Arrays.fill(w, 0.5f);
    w[6] = 0.99f;
    try (MoeRouter r = MoeRouter.create(c, backend)) {
      // cap = ceil(6 * 2 / 4 * 1) = 3
      Result x = drop(r, TokenDropping.of(1.0, DropPolicy.POSITION, false), idx, w, 6);
      assertArrayEquals(new int[] {3, 3, 2, 2}, x.keptCounts);
      assertEquals(0, x.kept[7], "token 3's entry on expert 0 is its fourth: dropped although weights tie");
      assertEquals(0, x.kept[10], "token 5 on expert 0: dropped");
      x = drop(r, TokenDropping.of(1.0, DropPolicy.POSITION, true), idx, w, 6);
      for (int ex = 0; ex < 4; ex++) {
        int rows = 0;
        for (int t = 0; t < 6; t++) rows += x.map[t * 4 + ex];
        assertEquals(3, rows, "expert " + ex + " gets exactly cap rows");
      }
      assertEquals(1, x.map[0 * 4 + 2], "expert 2's padding slot: token 0, the lowest not routed there");
      assertEquals(0f, x.probs[0 * 4 + 2]);
    }
  }

  /** cap >= tokens: nothing dropped; with padding every row of every expert is on the map. */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void aCapacityOfEveryTokenDropsNothing(Backend backend) {
    RouterConfig c = RouterConfig.builder(8, 2).build();
    int t = 10;
    float[] l = ReplayTest.logits(t, 8, 4);
    try (MoeRouter r = MoeRouter.create(c, backend)) {
      RoutingResult res = r.route(l, t);
      for (boolean pad : new boolean[] {false, true}) {
        Result x = drop(r, TokenDropping.of(8, DropPolicy.PROBS, pad), res.indices(), res.weights(), t);
        assertEquals(0, x.dropped);
        byte[] ones = new byte[t * 2];
        Arrays.fill(ones, (byte) 1);
        assertArrayEquals(ones, x.kept);
        byte[] map = new byte[t * 8];
        float[] probs = new float[t * 8];
        r.denseViews(res.indices(), res.weights(), t, map, probs);
        if (pad) Arrays.fill(map, (byte) 1);
        assertArrayEquals(map, x.map);
        assertArrayEquals(probs, x.probs);
      }
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void invalidSelectionsAreRejectedNamingTheRowBeforeAnyWrite(Backend backend) {
    RouterConfig c = RouterConfig.builder(4, 2).build();
    try (MoeRouter r = MoeRouter.create(c, backend)) {
      byte[] map = new byte[12];
      Arrays.fill(map, (byte) 7);
      MoeRouterException ex = assertThrows(MoeRouterException.class, () -> r.dropTokens(
          TokenDropping.of(1, DropPolicy.PROBS, false), new int[] {0, 1, 2, 3, 1, 1}, new float[6], 3, map, null, null, null));
      assertEquals(Status.INVALID_REPLAY, ex.status());
      assertTrue(ex.getMessage().contains("row 2: expert 1 appears twice"), ex.getMessage());
      for (byte b : map) assertEquals(7, b, "a rejected call wrote the map");
      MoeRouterTest.assertInvalid(() -> r.dropTokens(TokenDropping.of(1, DropPolicy.PROBS, false), new int[6], null, 3,
          null, null, null, null), "weights must not be null");
      MoeRouterTest.assertInvalid(() -> r.dropTokens(TokenDropping.of(1, DropPolicy.POSITION, false), new int[] {0, 1},
          null, 1, null, new float[4], null, null), "weights must not be null");
      MoeRouterTest.assertInvalid(() -> r.dropTokens(TokenDropping.of(1, DropPolicy.POSITION, false), new int[] {0, 1},
          new float[2], 1, null, new float[3], null, null), "outProbs holds 3 elements, needs 4");
    }
  }

  @Test
  void invalidDroppingOptionsAreRejectedWithTheRuleOnBothSides() {
    for (double cf : new double[] {0, -1, Double.NaN, Double.POSITIVE_INFINITY})
      MoeRouterTest.assertInvalid(() -> TokenDropping.of(cf, DropPolicy.PROBS, false),
          "invalid token dropping: capacity factor must be finite and > 0, got ");
    MoeRouterTest.assertInvalid(() -> TokenDropping.of(0, DropPolicy.PROBS, false), "must be finite and > 0, got 0");
    try (MoeRouter r = MoeRouter.create(RouterConfig.builder(4, 2).build(), Backend.CPU)) {
      long h = ((NativeRouter) r).handle();
      int[] idx = {0, 1};
      float[] w = {0.5f, 0.5f};
      Object[][] rules = {
          {0.0, 0, w, "capacity factor must be finite and > 0, got 0"},
          {Double.NaN, 0, w, "capacity factor must be finite and > 0, got nan"},
          {1.0, 5, w, "unknown drop policy 5"},
          {1.0, 0, null, "drop tokens: the weights are needed (probs policy or out_probs)"},
      };
      for (Object[] rule : rules) {
        long st = RouterNative.moe_jni_drop_tokens(h, idx, (float[]) rule[2], 1, (double) rule[0], (int) rule[1], 0,
            null, null, null, null);
        MoeRouterException ex = RouterNative.error((int) -st, "dropTokens");
        assertEquals(Status.INVALID_ARGUMENT, ex.status(), ex.getMessage());
        assertTrue(ex.getMessage().endsWith(": " + rule[3]), "native: '" + ex.getMessage() + "' lacks '" + rule[3] + "'");
      }
    }
  }

  @Test
  void maskDroppedZeroesDroppedEntriesEvenWhereTheGradientIsNan() {
    float[] dw = {1f, Float.NaN, -2f, 3f};
    float[] out = new float[4];
    TokenDropping.maskDropped(2, 2, dw, new byte[] {1, 0, 0, 1}, out);
    assertArrayEquals(new float[] {1f, 0f, 0f, 3f}, out);
    TokenDropping.maskDropped(2, 2, dw, new byte[] {0, 1, 1, 0}, dw);  // in place
    assertEquals(0f, dw[0]);
    assertTrue(Float.isNaN(dw[1]));
    MoeRouterTest.assertInvalid(() -> TokenDropping.maskDropped(2, 2, out, new byte[3], out), "kept holds 3 elements, needs 4");
  }

  /** Random selections, weights with ties, zeros and NaN, every policy, above 4096 tokens, any thread count. */
  @Test
  void javaAndCpuAgreeBitForBitOverRandomOptions() {
    SplittableRandom rnd = new SplittableRandom(99);
    int saved = MoeRouter.cpuThreads();
    try {
      for (int iter = 0; iter < 40; iter++) {
        int e = 2 + rnd.nextInt(60), k = 1 + rnd.nextInt(Math.min(e, 8));
        int t = iter % 10 == 9 ? 4100 + rnd.nextInt(3000) : 1 + rnd.nextInt(400);
        RouterConfig c = RouterConfig.builder(e, k).scoreFunction(ScoreFunction.SIGMOID).build();
        int[] idx = TestData.randomSelection(rnd, t, k, e);
        float[] w = new float[t * k];
        for (int i = 0; i < w.length; i++) {
          double u = rnd.nextDouble();
          w[i] = u < 0.1 ? 0f : u < 0.12 ? Float.NaN : u < 0.4 ? 0.25f * (1 + rnd.nextInt(3)) : (float) rnd.nextDouble();
        }
        TokenDropping d = TokenDropping.of(0.1 + rnd.nextDouble() * 1.5, rnd.nextBoolean() ? DropPolicy.PROBS
            : DropPolicy.POSITION, rnd.nextBoolean());
        MoeRouter.setCpuThreads(1 + rnd.nextInt(3));
        try (MoeRouter j = MoeRouter.create(c, Backend.JAVA); MoeRouter n = MoeRouter.create(c, Backend.CPU)) {
          Result a = drop(j, d, idx, w, t), b = drop(n, d, idx, w, t);
          String where = "iteration " + iter + ": E=" + e + " k=" + k + " T=" + t + " " + d;
          assertArrayEquals(a.map, b.map, where + ": map");
          assertArrayEquals(a.kept, b.kept, where + ": kept");
          assertArrayEquals(a.keptCounts, b.keptCounts, where + ": kept counts");
          assertEquals(a.dropped, b.dropped, where + ": dropped");
          for (int i = 0; i < a.probs.length; i++)
            if (Float.floatToIntBits(a.probs[i]) != Float.floatToIntBits(b.probs[i])) fail(where + ": probs " + i);
          long cap = d.capacity(t, k, e);
          for (int ex = 0; ex < e; ex++) {
            assertTrue(a.keptCounts[ex] <= cap, where + ": expert " + ex + " over capacity");
            int rows = 0;
            for (int tok = 0; tok < t; tok++) rows += a.map[tok * e + ex];
            if (d.padToCapacity()) assertEquals(Math.min(cap, t), rows, where + ": padded expert " + ex);
          }
        }
      }
    } finally {
      MoeRouter.setCpuThreads(saved);
    }
  }

  static final class Result {
    byte[] map, kept;
    float[] probs;
    int[] keptCounts;
    long dropped;
  }

  static Result drop(MoeRouter r, TokenDropping d, int[] idx, float[] w, int t) {
    int e = r.config().experts(), k = r.config().topK();
    Result x = new Result();
    x.map = new byte[t * e];
    x.kept = new byte[t * k];
    x.probs = new float[t * e];
    x.keptCounts = new int[e];
    Arrays.fill(x.map, (byte) 9);
    Arrays.fill(x.kept, (byte) 9);
    Arrays.fill(x.probs, 9f);
    x.dropped = r.dropTokens(d, idx, w, t, x.map, x.probs, x.kept, x.keptCounts);
    return x;
  }
}
