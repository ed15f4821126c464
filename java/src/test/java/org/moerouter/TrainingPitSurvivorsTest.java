// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Behaviour of the spec section 6 classes that PIT showed no test pinned down (JavaTraining, LossConfig,
 * TokenDropping, GlobalAuxTracker; docs/testing.md lists each mutant): fp16 logits in the losses, stale output
 * arrays, a global batch of 0 tokens, PROBS dropping with zero, negative and NaN probabilities, and the value
 * types' argument limits, equality and text.
 */
class TrainingPitSurvivorsTest {

  static void invalid(String message, Executable call) {
    MoeRouterException x = assertThrows(MoeRouterException.class, call);
    assertEquals(Status.INVALID_ARGUMENT, x.status());
    assertTrue(x.getMessage().contains(message), () -> "'" + x.getMessage() + "' lacks '" + message + "'");
  }

  /** Random fp16 logits in about (-4, 4), normal and subnormal, as raw halves. */
  static short[] fp16(int n, long seed) {
    SplittableRandom rnd = new SplittableRandom(seed);
    short[] h = new short[n];
    for (int i = 0; i < n; i++) h[i] = (short) ((rnd.nextInt(2) << 15) | (rnd.nextInt(17) << 10) | rnd.nextInt(1024));
    return h;
  }

  /** Every loss and its gradient over fp16 logits: JAVA and CPU agree bit for bit and match the fp32 call. */
  @Test
  void lossesOverFp16LogitsAgreeAcrossBackends() {
    RouterConfig c = RouterConfig.builder(24, 3).scoreFunction(ScoreFunction.SIGMOID).build();
    int t = 300;
    short[] h = fp16(t * 24, 12);
    float[] back = new float[h.length];
    for (int i = 0; i < h.length; i++) back[i] = JavaRouting.f16ToFloat(h[i]);
    LossConfig lc = LossConfig.builder().auxLoss(0.01f).seqAuxLoss(0.02f, 100, SeqLayout.SB).zLoss(0.001f).build();
    double[] global = new double[24];
    Arrays.fill(global, 37.5);
    LossValues[] v = new LossValues[2];
    float[][] g = new float[2][t * 24];
    int b = 0;
    for (Backend backend : Backends.host()) {
      try (MoeRouter r = MoeRouter.create(c, backend)) {
        v[b] = r.losses(h, LogitsType.FP16, t, null, lc, global, 900, g[b], new LossValues(24));
        LossValues f = r.losses(back, t, null, lc, global, 900, new float[t * 24], new LossValues(24));
        assertEquals(f.toString(), v[b].toString(), backend + ": fp16 read as its fp32 values");
        assertTrue(v[b].zLoss() > 0 && v[b].auxLoss() > 0 && v[b].seqAuxLoss() > 0, v[b].toString());
      }
      b++;
    }
    assertEquals(v[0].toString(), v[1].toString());
    assertArrayEquals(g[0], g[1]);
  }

  /** Output arrays holding stale values from an earlier call are overwritten, padding rows included. */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void staleOutputsAreOverwritten(Backend backend) {
    int e = 8, k = 2, t = 6;
    RouterConfig c = RouterConfig.builder(e, k).scoreFunction(ScoreFunction.SIGMOID).nonFinite(NonFinitePolicy.ZERO).build();
    float[] l = ReplayTest.logits(t, e, 4);
    l[3 * e + 5] = Float.NaN;  // row 3 is padding under ZERO
    try (MoeRouter r = MoeRouter.create(c, backend)) {
      float[] scores = new float[t * e];
      byte[] map = new byte[t * e];
      int[] counts = new int[e];
      r.auxLoss(l, t, 0.1f, scores, map, counts, null);
      float[] staleScores = new float[t * e];
      Arrays.fill(staleScores, 9f);
      byte[] staleMap = new byte[t * e];
      Arrays.fill(staleMap, (byte) 1);
      int[] staleCounts = new int[e];
      Arrays.fill(staleCounts, 99);
      r.auxLoss(l, t, 0.1f, staleScores, staleMap, staleCounts, null);
      assertArrayEquals(scores, staleScores);
      assertArrayEquals(map, staleMap);
      assertArrayEquals(counts, staleCounts);
      for (int i = 0; i < t * e; i++)
        if (i / e != 3) assertTrue(staleScores[i] > 0f, "a valid row's score is positive: " + i);
      for (int i = 0; i < e; i++) {
        assertEquals(0f, staleScores[3 * e + i], "padding row scores");
        assertEquals(0, staleMap[3 * e + i], "padding row map");
      }
      int routed = 0;
      for (int i = 0; i < t * e; i++) routed += staleMap[i];
      assertEquals((t - 1) * k, routed, "k experts per valid row");

      int[] idx = {0, 1, 2, 3, 4, 5, 6, 7, 0, 7, 1, 6};
      int[] want = {2, 2, 1, 1, 1, 1, 2, 2};
      int[] got = new int[e];
      Arrays.fill(got, 42);
      assertArrayEquals(want, r.tokensPerExpert(idx, t, null, got));
      Arrays.fill(got, 42);
      assertArrayEquals(want, r.tokensPerExpert(idx, t, got));
    }
  }

  /** A global batch of 0 tokens (no counts yet) makes the global aux loss 0 and adds nothing to the gradient. */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void globalAuxLossWithNoGlobalTokensIsZero(Backend backend) {
    int e = 8, t = 5;
    float[] l = ReplayTest.logits(t, e, 8);
    try (MoeRouter r = MoeRouter.create(RouterConfig.builder(e, 2).build(), backend)) {
      float[] grad = new float[t * e];
      LossValues v = r.losses(l, t, null, LossConfig.builder().globalAuxLoss(0.5f).build(), new double[e], 0.0, grad,
          new LossValues(e));
      assertEquals(0.0, v.globalAuxLoss());
      assertEquals(t, v.validTokens());
      assertArrayEquals(new float[t * e], grad);
    }
  }

  /**
   * PROBS dropping with probabilities that are exactly 0, -0, negative or NaN (a user's weights: dropTokens takes
   * any array) and capacities that reach past the zero ones: the Java backend keeps what the native one keeps.
   */
  @Test
  void probsDroppingWithZeroNegativeAndNanProbabilitiesMatchesTheNativeBackend() {
    SplittableRandom rnd = new SplittableRandom(17);
    float[] pool = {0f, -0f, 0f, -0.5f, -2f, Float.NaN, 0.25f, 0.75f, 0.25f, 1e-30f};
    int cases = 0;
    for (int round = 0; round < 400; round++) {
      int e = 2 + rnd.nextInt(7), k = 1 + rnd.nextInt(Math.min(3, e)), t = 1 + rnd.nextInt(24);
      int[] idx = new int[t * k];
      float[] w = new float[t * k];
      for (int tok = 0; tok < t; tok++) {
        int[] perm = rnd.ints(0, e).distinct().limit(k).toArray();
        System.arraycopy(perm, 0, idx, tok * k, k);
        for (int j = 0; j < k; j++) w[tok * k + j] = pool[rnd.nextInt(pool.length)];
      }
      double factor = new double[] {0.1, 0.3, 0.5, 0.8, 1.0, 1.5}[rnd.nextInt(6)];
      TokenDropping d = TokenDropping.of(factor, rnd.nextBoolean() ? DropPolicy.PROBS : DropPolicy.POSITION, rnd.nextBoolean());
      RouterConfig c = RouterConfig.builder(e, k).build();
      Object[][] out = new Object[2][];
      int b = 0;
      for (Backend backend : Backends.host()) {
        try (MoeRouter r = MoeRouter.create(c, backend)) {
          byte[] map = new byte[t * e];
          float[] probs = new float[t * e];
          byte[] kept = new byte[t * k];
          int[] keptCounts = new int[e];
          long dropped = r.dropTokens(d, idx, w, t, map, probs, kept, keptCounts);
          out[b++] = new Object[] {dropped, map, probs, kept, keptCounts};
        }
      }
      String where = "round " + round + ": " + d + " E=" + e + " k=" + k + " T=" + t + " idx=" + Arrays.toString(idx)
          + " w=" + Arrays.toString(w);
      assertEquals(out[1][0], out[0][0], where + ": dropped");
      assertArrayEquals((byte[]) out[1][1], (byte[]) out[0][1], where + ": map");
      assertArrayEquals((float[]) out[1][2], (float[]) out[0][2], where + ": probs");
      assertArrayEquals((byte[]) out[1][3], (byte[]) out[0][3], where + ": kept");
      assertArrayEquals((int[]) out[1][4], (int[]) out[0][4], where + ": kept counts");
      if ((long) out[0][0] > 0) cases++;
    }
    assertTrue(cases > 100, "cases that drop: " + cases);
  }

  /** A hand-checked PROBS case: positive probabilities first, then zeros in token order, then negative ones. */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void probsDroppingTakesZerosInTokenOrderThenNegativeProbabilities(Backend backend) {
    // E = 2, k = 1, 6 tokens all on expert 0; capacity ceil(6 * 1 / 2 * f).
    int[] idx = {0, 0, 0, 0, 0, 0};
    float[] w = {-1f, 0f, 0.5f, -0.25f, 0f, 0.75f};
    try (MoeRouter r = MoeRouter.create(RouterConfig.builder(2, 1).build(), backend)) {
      // capacity 5: 0.75, 0.5, then zeros (tokens 1, 4), then -0.25; -1 dropped.
      byte[] kept = new byte[6];
      int[] counts = new int[2];
      assertEquals(1, r.dropTokens(TokenDropping.of(5.0 / 3, DropPolicy.PROBS, false), idx, w, 6, null, null, kept, counts));
      assertArrayEquals(new byte[] {0, 1, 1, 1, 1, 1}, kept);
      assertArrayEquals(new int[] {5, 0}, counts);
      // capacity 3: 0.75, 0.5, then the first zero in token order (token 1).
      assertEquals(3, r.dropTokens(TokenDropping.of(1.0, DropPolicy.PROBS, false), idx, w, 6, null, null, kept, counts));
      assertArrayEquals(new byte[] {0, 1, 1, 0, 0, 1}, kept);
    }
  }

  @Test
  void tokenDroppingArgumentsEqualityAndText() {
    TokenDropping d = TokenDropping.of(1.25, DropPolicy.PROBS, true);
    assertEquals(0, d.capacity(0, 1, 1));
    assertEquals(2, d.capacity(2, 1, 1));
    invalid("capacity: bad arguments (tokens=-1, k=1, experts=1)", () -> d.capacity(-1, 1, 1));
    invalid("capacity: bad arguments (tokens=1, k=0, experts=1)", () -> d.capacity(1, 0, 1));
    invalid("capacity: bad arguments (tokens=1, k=1, experts=0)", () -> d.capacity(1, 1, 0));

    float[] out = new float[3];
    TokenDropping.maskDropped(0, 1, new float[0], new byte[0], new float[0]);
    TokenDropping.maskDropped(3, 1, new float[] {1, 2, 3}, new byte[] {1, 0, 1}, out);
    assertArrayEquals(new float[] {1, 0, 3}, out);
    invalid("maskDropped: bad shape [-1, 1]", () -> TokenDropping.maskDropped(-1, 1, out, new byte[3], out));
    invalid("maskDropped: bad shape [3, 0]", () -> TokenDropping.maskDropped(3, 0, out, new byte[3], out));
    invalid("gradWeights", () -> TokenDropping.maskDropped(2, 2, out, new byte[4], new float[4]));
    invalid("kept", () -> TokenDropping.maskDropped(2, 2, new float[4], new byte[3], new float[4]));
    invalid("out", () -> TokenDropping.maskDropped(2, 2, new float[4], new byte[4], out));

    assertEquals(d, TokenDropping.of(1.25, DropPolicy.PROBS, true));
    assertEquals(d.hashCode(), TokenDropping.of(1.25, DropPolicy.PROBS, true).hashCode());
    assertNotEquals(d.hashCode(), TokenDropping.of(1.5, DropPolicy.PROBS, true).hashCode());
    assertNotEquals(d, TokenDropping.of(1.5, DropPolicy.PROBS, true));
    assertNotEquals(d, TokenDropping.of(1.25, DropPolicy.POSITION, true));
    assertNotEquals(d, TokenDropping.of(1.25, DropPolicy.PROBS, false));
    assertNotEquals(d, (Object) "TokenDropping");
    assertEquals("TokenDropping{capacityFactor=1.25, policy=PROBS, padToCapacity}", d.toString());
    assertEquals("TokenDropping{capacityFactor=2.0, policy=POSITION}", TokenDropping.of(2, DropPolicy.POSITION, false).toString());
  }

  @Test
  void lossConfigLimitsEqualityAndText() {
    LossConfig none = LossConfig.builder().build();
    assertEquals("LossConfig{}", none.toString());
    LossConfig all = LossConfig.builder().auxLoss(0.5f).seqAuxLoss(0.25f, 64, SeqLayout.SB).globalAuxLoss(2f).zLoss(1e-3f)
        .build();
    assertEquals("LossConfig{aux=0.5, seqAux=0.25 (Sq=64 SB), globalAux=2.0, z=0.001}", all.toString());
    assertEquals("LossConfig{z=0.001}", LossConfig.builder().zLoss(1e-3f).build().toString());
    assertEquals("LossConfig{globalAux=2.0}", LossConfig.builder().globalAuxLoss(2f).build().toString());
    assertEquals("LossConfig{seqAux=0.25 (Sq=1 BS)}", LossConfig.builder().seqAuxLoss(0.25f, 1, SeqLayout.BS).build().toString());
    // A sequence length without the sequence loss is not kept, and is not checked.
    LossConfig off = LossConfig.builder().seqAuxLoss(0f, 0, SeqLayout.BS).build();
    assertEquals(0, off.seqLength());
    assertEquals(0, LossConfig.builder().seqAuxLoss(0f, 64, SeqLayout.BS).build().seqLength());
    invalid("seq aux loss needs a seq length >= 1, got 0", () -> LossConfig.builder().seqAuxLoss(0.1f, 0, SeqLayout.BS).build());
    invalid("aux loss coefficient must be finite and >= 0, got -1", () -> LossConfig.builder().auxLoss(-1f).build());
    invalid("seq aux loss coefficient", () -> LossConfig.builder().seqAuxLoss(Float.NaN, 4, SeqLayout.BS).build());
    invalid("global aux loss coefficient", () -> LossConfig.builder().globalAuxLoss(Float.POSITIVE_INFINITY).build());
    invalid("z-loss coefficient", () -> LossConfig.builder().zLoss(-0.5f).build());

    LossConfig same = LossConfig.builder().auxLoss(0.5f).seqAuxLoss(0.25f, 64, SeqLayout.SB).globalAuxLoss(2f).zLoss(1e-3f)
        .build();
    assertEquals(all, same);
    assertEquals(all.hashCode(), same.hashCode());
    assertNotEquals(all.hashCode(), none.hashCode());
    assertNotEquals(all, (Object) "LossConfig");
    assertNotEquals(all, LossConfig.builder().auxLoss(0.5f).seqAuxLoss(0.25f, 64, SeqLayout.SB).globalAuxLoss(2f).build());
    assertNotEquals(all, LossConfig.builder().auxLoss(0.5f).seqAuxLoss(0.25f, 64, SeqLayout.SB).zLoss(1e-3f).build());
    assertNotEquals(all, LossConfig.builder().auxLoss(0.5f).seqAuxLoss(0.25f, 32, SeqLayout.SB).globalAuxLoss(2f).zLoss(1e-3f).build());
    assertNotEquals(all, LossConfig.builder().auxLoss(0.5f).seqAuxLoss(0.25f, 64, SeqLayout.BS).globalAuxLoss(2f).zLoss(1e-3f).build());
    assertNotEquals(all, LossConfig.builder().auxLoss(0.5f).seqAuxLoss(0.5f, 64, SeqLayout.SB).globalAuxLoss(2f).zLoss(1e-3f).build());
    assertNotEquals(all, LossConfig.builder().seqAuxLoss(0.25f, 64, SeqLayout.SB).globalAuxLoss(2f).zLoss(1e-3f).build());

    new LossValues(1);
    new LossValues(RouterConfig.MAX_EXPERTS);
    invalid("experts must be in [1, 4096], got 0", () -> new LossValues(0));
    invalid("experts must be in [1, 4096], got 4097", () -> new LossValues(RouterConfig.MAX_EXPERTS + 1));
    LossValues v = new LossValues(4);
    assertEquals("LossValues{aux=0.0, seqAux=0.0, globalAux=0.0, z=0.0, validTokens=0}", v.toString());
  }

  @Test
  void globalAuxTrackerLimitsAndText() {
    new GlobalAuxTracker(1, 1);
    new GlobalAuxTracker(RouterConfig.MAX_EXPERTS, RouterConfig.MAX_EXPERTS);
    invalid("experts must be in [1, 4096], got 0", () -> new GlobalAuxTracker(0, 1));
    invalid("experts must be in [1, 4096], got 4097", () -> new GlobalAuxTracker(RouterConfig.MAX_EXPERTS + 1, 1));
    invalid("topK must be in [1, experts], got 0", () -> new GlobalAuxTracker(4, 0));
    invalid("topK must be in [1, experts], got 5", () -> new GlobalAuxTracker(4, 5));

    GlobalAuxTracker g = new GlobalAuxTracker(4, 2);
    invalid("global counts must not be null", () -> g.add((double[]) null));
    invalid("global counts hold 0 entries, expected 4", () -> g.add(new double[0]));
    invalid("global counts hold 5 entries, expected 4", () -> g.add(new double[5]));
    invalid("global counts hold 0 entries, expected 4", () -> g.add(new int[0]));
    invalid("out must hold 4 entries, got null", () -> g.tokensPerExpert(null));
    invalid("out must hold 4 entries, got 3", () -> g.tokensPerExpert(new double[3]));
    assertEquals(0, g.steps());
    g.add(new double[] {1, 2, 3, 4});
    assertEquals("GlobalAuxTracker{experts=4, topK=2, steps=1, numTokens=5.0}", g.toString());
    assertArrayEquals(new double[] {1, 2, 3, 4, -7}, g.tokensPerExpert(new double[] {0, 0, 0, 0, -7}));
  }
}
