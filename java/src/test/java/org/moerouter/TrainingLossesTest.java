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

/**
 * Spec section 6 losses beyond the reference cases: finite differences of every gradient, padding as
 * exclusion, N = 0, the global tracker, the aux map's ranking by logit, JAVA vs CPU bit for bit (random
 * options, bf16, above 4096 tokens where the native path runs on threads, any thread count) and the
 * argument rules with their texts on both sides.
 */
class TrainingLossesTest {
  static final RouterConfig[] SCORES = {
      RouterConfig.builder(16, 3).build(),
      RouterConfig.builder(16, 3).scoreFunction(ScoreFunction.SIGMOID).build(),
      RouterConfig.builder(16, 3).scoreFunction(ScoreFunction.SQRTSOFTPLUS).build(),
  };

  /** Logits of distinct values at least 0.05 apart in each row: a 1e-2 step never changes the top-k map. */
  static float[] separatedLogits(int tokens, int experts, long seed) {
    SplittableRandom rnd = new SplittableRandom(seed);
    float[] l = new float[tokens * experts];
    for (int t = 0; t < tokens; t++) {
      int[] perm = TestData.randomSelection(rnd, 1, experts, experts);
      for (int i = 0; i < experts; i++) l[t * experts + i] = (perm[i] - experts / 2f) * 0.25f + 0.05f * (float) rnd.nextDouble();
    }
    return l;
  }

  static byte[] padding(int tokens, long seed, double p) {
    SplittableRandom rnd = new SplittableRandom(seed);
    byte[] pad = new byte[tokens];
    for (int t = 0; t < tokens; t++) pad[t] = (byte) (rnd.nextDouble() < p ? 1 : 0);
    return pad;
  }

  /** Central differences of each loss alone (its c, G, Ng and N held: the top-k map cannot move). */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void everyLossGradientMatchesFiniteDifferences(Backend backend) {
    int t = 8, seq = 4;
    for (RouterConfig c : SCORES) {
      int e = c.experts();
      float[] l = separatedLogits(t, e, 21);
      byte[] pad = new byte[t];
      pad[1] = pad[6] = 1;
      double[] g = new double[e];
      for (int i = 0; i < e; i++) g[i] = 3 + i % 5;
      LossConfig[] each = {
          LossConfig.builder().auxLoss(0.5f).build(),
          LossConfig.builder().seqAuxLoss(0.5f, seq, SeqLayout.SB).build(),
          LossConfig.builder().seqAuxLoss(0.5f, seq, SeqLayout.BS).build(),
          LossConfig.builder().globalAuxLoss(0.5f).build(),
          LossConfig.builder().zLoss(0.5f).build(),
      };
      try (MoeRouter r = MoeRouter.create(c, backend)) {
        byte[] valid = new byte[t];
        r.validTokens(l, t, pad, valid);
        for (LossConfig lc : each) {
          LossValues v = new LossValues(e);
          float[] grad = new float[t * e];
          r.losses(l, t, valid, lc, g, 40, grad, v);
          int[] c0 = v.auxTokensPerExpert().clone();
          float h = 1e-2f;
          float[] fd = new float[t * e];
          for (int i = 0; i < l.length; i++) {
            float saved = l[i];
            l[i] = saved + h;
            double plus = r.losses(l, t, valid, lc, g, 40, null, v).total();
            assertArrayEquals(c0, v.auxTokensPerExpert(), "the step moved the top-k map");
            l[i] = saved - h;
            double minus = r.losses(l, t, valid, lc, g, 40, null, v).total();
            l[i] = saved;
            fd[i] = (float) ((plus - minus) / (2 * h));
          }
          TrainingTest.assertGradClose(c + " " + lc, fd, grad, 5e-3);
          for (int i = 0; i < e; i++) {
            assertEquals(0f, grad[1 * e + i], lc + ": padding row 1 got a gradient");
            assertEquals(0f, grad[6 * e + i], lc + ": padding row 6 got a gradient");
          }
        }
      }
    }
  }

  /**
   * Padding is exclusion: aux and z losses over a padded batch equal those of the batch without its padded
   * rows, valid rows get the same gradient, padded rows none, and whatever the padded rows hold (NaN
   * included) changes nothing.
   */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void paddedRowsAreExcludedAndNeverRead(Backend backend) {
    int t = 300, e = 16;
    for (RouterConfig c : SCORES) {
      float[] l = ReplayTest.logits(t, e, 5);
      byte[] pad = padding(t, 6, 0.3);
      int n = 0;
      for (byte p : pad) n += p == 0 ? 1 : 0;
      float[] compact = new float[n * e];
      for (int s = 0, d = 0; s < t; s++)
        if (pad[s] == 0) System.arraycopy(l, s * e, compact, d++ * e, e);
      float[] garbage = l.clone();
      for (int s = 0; s < t; s++) if (pad[s] != 0) Arrays.fill(garbage, s * e, (s + 1) * e, Float.NaN);
      LossConfig lc = LossConfig.builder().auxLoss(0.01f).zLoss(0.001f).build();
      try (MoeRouter r = MoeRouter.create(c, backend)) {
        byte[] valid = new byte[t];
        assertEquals(n, r.validTokens(l, t, pad, valid));
        LossValues padded = new LossValues(e), reference = new LossValues(e), nan = new LossValues(e);
        float[] gp = new float[t * e], gc = new float[n * e], gn = new float[t * e];
        r.losses(l, t, valid, lc, null, 0, gp, padded);
        r.losses(compact, n, null, lc, null, 0, gc, reference);
        r.losses(garbage, t, valid, lc, null, 0, gn, nan);
        assertEquals(n, padded.validTokens());
        assertArrayEquals(reference.auxTokensPerExpert(), padded.auxTokensPerExpert(), "c over the valid rows");
        assertEquals(reference.auxLoss(), padded.auxLoss(), 1e-12 * reference.auxLoss(), "aux loss");
        assertEquals(reference.zLoss(), padded.zLoss(), 1e-12 * reference.zLoss(), "z-loss");
        for (int s = 0, d = 0; s < t; s++)
          for (int i = 0; i < e; i++) {
            if (pad[s] != 0) {
              assertEquals(0f, gp[s * e + i], "padded row " + s);
              continue;
            }
            assertEquals(gc[d * e + i], gp[s * e + i], 1e-6f * Math.abs(gc[d * e + i]) + 1e-12f, "valid row " + s);
            if (i == e - 1) d++;
          }
        assertEquals(padded.total(), nan.total(), 0.0, "NaN in padded rows changed the losses");
        assertArrayEquals(gp, gn, "NaN in padded rows changed the gradient");
      }
    }
  }

  /** N = 0 (everything padded, or every row non-finite under ZERO): every loss 0, nothing added. */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void noValidTokenGivesZeroLossesAndNoGradient(Backend backend) {
    int t = 12, e = 8;
    LossConfig all = LossConfig.builder().auxLoss(1f).seqAuxLoss(1f, 4, SeqLayout.SB).globalAuxLoss(1f).zLoss(1f).build();
    double[] g = new double[e];
    Arrays.fill(g, 5);
    for (NonFinitePolicy policy : new NonFinitePolicy[] {NonFinitePolicy.PROPAGATE, NonFinitePolicy.ZERO}) {
      RouterConfig c = RouterConfig.builder(e, 2).scoreFunction(ScoreFunction.SIGMOID).nonFinite(policy).build();
      float[] l = ReplayTest.logits(t, e, 8);
      byte[] pad = new byte[t];
      if (policy == NonFinitePolicy.ZERO) for (int s = 0; s < t; s++) l[s * e + s % e] = Float.NaN;
      else Arrays.fill(pad, (byte) 1);
      try (MoeRouter r = MoeRouter.create(c, backend)) {
        byte[] valid = new byte[t];
        assertEquals(0, r.validTokens(l, t, pad, valid), policy + ": N");
        for (byte[] v : new byte[][] {valid, policy == NonFinitePolicy.ZERO ? null : valid}) {
          float[] grad = new float[t * e];
          Arrays.fill(grad, 0.25f);
          LossValues out = r.losses(l, t, v, all, g, 10, grad, new LossValues(e));
          assertEquals(0, out.validTokens());
          assertEquals(0.0, out.auxLoss());
          assertEquals(0.0, out.seqAuxLoss());
          assertEquals(0.0, out.globalAuxLoss());
          assertEquals(0.0, out.zLoss());
          assertArrayEquals(new int[e], out.auxTokensPerExpert());
          for (float x : grad) assertEquals(0.25f, x, "a gradient was added with N = 0");
        }
      }
    }
  }

  /** The gradient is added (onto the routing backward's), never written. */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void lossGradientsAccumulateOntoTheCallersBuffer(Backend backend) {
    int t = 20, e = 16;
    float[] l = ReplayTest.logits(t, e, 3);
    LossConfig lc = LossConfig.builder().auxLoss(0.1f).seqAuxLoss(0.1f, 5, SeqLayout.BS).zLoss(0.1f).build();
    try (MoeRouter r = MoeRouter.create(SCORES[1], backend)) {
      float[] once = new float[t * e], twice = new float[t * e];
      r.losses(l, t, null, lc, null, 0, once, new LossValues(e));
      r.losses(l, t, null, lc, null, 0, twice, new LossValues(e));
      r.losses(l, t, null, lc, null, 0, twice, new LossValues(e));
      // (0 + aux + z) twice is not bit for bit 2 * (aux + z): the sums round in another order.
      for (int i = 0; i < once.length; i++) assertEquals(2 * once[i], twice[i], 1e-6f * Math.abs(once[i]), "element " + i);
      assertTrue(Arrays.stream(box(once)).anyMatch(x -> x != 0), "a gradient at all");
    }
  }

  /** M ranks the logits: sigmoid(17) == sigmoid(30) == 1.0f in float32, the larger logit must win. */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void theAuxMapRanksTheLogitsNotTheSaturatedScores(Backend backend) {
    RouterConfig c = RouterConfig.builder(4, 1).scoreFunction(ScoreFunction.SIGMOID).build();
    float[] l = {17f, 30f, -5f, -5f};
    try (MoeRouter r = MoeRouter.create(c, backend)) {
      LossValues v = r.losses(l, 1, null, LossConfig.builder().auxLoss(1f).build(), null, 0, null, new LossValues(4));
      assertArrayEquals(new int[] {0, 1, 0, 0}, v.auxTokensPerExpert());
      byte[] map = new byte[4];
      int[] counts = new int[4];
      r.auxLoss(l, 1, 1f, null, map, counts, null);
      assertArrayEquals(new byte[] {0, 1, 0, 0}, map, "auxLoss's top-k map");
      assertArrayEquals(new int[] {0, 1, 0, 0}, counts);
    }
  }

  @Test
  void theGlobalTrackerKeepsTheRunningAverageUntilReset() {
    GlobalAuxTracker g = new GlobalAuxTracker(3, 2);
    assertEquals(0, g.steps());
    assertThrows(IllegalStateException.class, () -> g.tokensPerExpert(new double[3]));
    g.add(new int[] {4, 0, 2});
    assertArrayEquals(new double[] {4, 0, 2}, g.tokensPerExpert(new double[3]));
    assertEquals(3.0, g.numTokens());
    g.add(new double[] {1, 5, 0});
    assertEquals(2, g.steps());
    assertArrayEquals(new double[] {2.5, 2.5, 1}, g.tokensPerExpert(new double[3]));
    assertEquals(3.0, g.numTokens(), "Ng is the last micro-batch's sum / k");
    g.add(new int[] {0, 0, 6});
    assertArrayEquals(new double[] {5 / 3.0, 5 / 3.0, 8 / 3.0}, g.tokensPerExpert(new double[3]));
    g.reset();
    assertEquals(0, g.steps());
    assertEquals(0.0, g.numTokens());
    g.add(new int[] {2, 2, 2});
    assertArrayEquals(new double[] {2, 2, 2}, g.tokensPerExpert(new double[3]), "reset forgets the history");
    MoeRouterTest.assertInvalid(() -> g.add(new int[2]), "global counts hold 2 entries, expected 3");
    MoeRouterTest.assertInvalid(() -> g.add(new int[] {1, -1, 0}), "global counts[1] is negative: -1");
    MoeRouterTest.assertInvalid(() -> g.add(new double[] {1, Double.NaN, 0}), "global counts[1] must be finite and >= 0");
    assertEquals(1, g.steps(), "a rejected add changes nothing");
  }

  /** With one rank and no history (G = c, Ng = N), the global aux loss is the aux loss. */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void oneRankWithoutHistoryMakesTheGlobalLossTheAuxLoss(Backend backend) {
    int t = 50, e = 16;
    float[] l = ReplayTest.logits(t, e, 12);
    byte[] pad = padding(t, 13, 0.2);
    try (MoeRouter r = MoeRouter.create(SCORES[2], backend)) {
      byte[] valid = new byte[t];
      r.validTokens(l, t, pad, valid);
      float[] ga = new float[t * e], gg = new float[t * e];
      LossValues a = r.losses(l, t, valid, LossConfig.builder().auxLoss(0.3f).build(), null, 0, ga, new LossValues(e));
      GlobalAuxTracker tracker = new GlobalAuxTracker(e, 3);
      tracker.add(a.auxTokensPerExpert());
      LossValues g = r.losses(l, t, valid, LossConfig.builder().globalAuxLoss(0.3f).build(),
          tracker.tokensPerExpert(new double[e]), tracker.numTokens(), gg, new LossValues(e));
      assertEquals(a.validTokens(), (long) tracker.numTokens());
      assertEquals(a.auxLoss(), g.globalAuxLoss(), 1e-15 * a.auxLoss());
      assertArrayEquals(ga, gg);
    }
  }

  /** Random options, padding, ZERO rows and bf16: JAVA and CPU agree bit for bit (values, c, N, gradients). */
  @Test
  void javaAndCpuAgreeBitForBitOverRandomOptions() {
    SplittableRandom rnd = new SplittableRandom(2024);
    for (int iter = 0; iter < 60; iter++) {
      ScoreFunction score = ScoreFunction.values()[rnd.nextInt(3)];
      int e = 2 + rnd.nextInt(70), k = 1 + rnd.nextInt(Math.min(e, 9));
      RouterConfig.Builder b = RouterConfig.builder(e, k).scoreFunction(score)
          .nonFinite(rnd.nextBoolean() ? NonFinitePolicy.ZERO : NonFinitePolicy.PROPAGATE);
      if (score == ScoreFunction.SOFTMAX) b.preSoftmax(rnd.nextBoolean());
      RouterConfig c = b.build();
      int seq = 1 + rnd.nextInt(40), batch = 1 + rnd.nextInt(12), t = seq * batch;
      float[] l = new float[t * e];
      for (int i = 0; i < l.length; i++) l[i] = (float) (rnd.nextGaussian() * (1 + rnd.nextInt(8)));
      if (c.nonFinite() == NonFinitePolicy.ZERO)
        for (int j = 0; j < 3; j++) l[rnd.nextInt(l.length)] = j == 0 ? Float.NaN : j == 1 ? Float.POSITIVE_INFINITY : Float.NEGATIVE_INFINITY;
      LogitsType type = rnd.nextBoolean() ? LogitsType.FP32 : LogitsType.BF16;
      short[] half = type == LogitsType.BF16 ? bf16(l) : null;
      byte[] pad = rnd.nextBoolean() ? padding(t, rnd.nextLong(), rnd.nextDouble() * 0.5) : null;
      LossConfig lc = LossConfig.builder().auxLoss(rnd.nextBoolean() ? 0.01f : 0f)
          .seqAuxLoss(rnd.nextBoolean() ? 0.002f : 0f, seq, rnd.nextBoolean() ? SeqLayout.SB : SeqLayout.BS)
          .globalAuxLoss(rnd.nextBoolean() ? 0.01f : 0f).zLoss(rnd.nextBoolean() ? 0.001f : 0f).build();
      double[] g = new double[e];
      for (int i = 0; i < e; i++) g[i] = rnd.nextInt(3 * t);
      String where = "iteration " + iter + ": " + c + " " + lc + " T=" + t + " " + type + (pad != null ? " padded" : "");
      assertSameLosses(where, c, l, half, type, t, pad, lc, g, rnd.nextInt(4 * t));
    }
  }

  /** Above 4096 tokens (threads and chunks on the native side) with padding, every loss, any thread count. */
  @Test
  void largeCallsAgreeOnEveryThreadCount() {
    int saved = MoeRouter.cpuThreads();
    try {
      int seq = 1100, batch = 5, t = seq * batch, e = 64;
      for (RouterConfig c : new RouterConfig[] {
          RouterConfig.builder(e, 6).scoreFunction(ScoreFunction.SIGMOID).nonFinite(NonFinitePolicy.ZERO).build(),
          RouterConfig.builder(e, 8).build()}) {
        float[] l = ReplayTest.logits(t, e, 77);
        l[4500 * e + 3] = Float.NaN;
        byte[] pad = padding(t, 78, 0.15);
        double[] g = new double[e];
        Arrays.fill(g, 600);
        for (SeqLayout layout : SeqLayout.values()) {
          LossConfig lc = LossConfig.builder().auxLoss(0.01f).seqAuxLoss(0.001f, seq, layout).globalAuxLoss(0.01f)
              .zLoss(0.001f).build();
          for (int threads : new int[] {1, 3}) {
            MoeRouter.setCpuThreads(threads);
            assertSameLosses(c + " " + layout + " threads=" + threads, c, l, null, LogitsType.FP32, t, pad, lc, g, 4000);
          }
        }
      }
    } finally {
      MoeRouter.setCpuThreads(saved);
    }
  }

  static void assertSameLosses(String where, RouterConfig c, float[] l, short[] half, LogitsType type, int t,
      byte[] pad, LossConfig lc, double[] g, double ng) {
    int e = c.experts();
    try (MoeRouter j = MoeRouter.create(c, Backend.JAVA); MoeRouter n = MoeRouter.create(c, Backend.CPU)) {
      byte[] vj = new byte[t], vn = new byte[t];
      long nj = half != null ? j.validTokens(half, type, t, pad, vj) : j.validTokens(l, t, pad, vj);
      long nn = half != null ? n.validTokens(half, type, t, pad, vn) : n.validTokens(l, t, pad, vn);
      assertEquals(nj, nn, where + ": N");
      assertArrayEquals(vj, vn, where + ": valid rows");
      float[] gj = new float[t * e], gn = new float[t * e];
      LossValues a = new LossValues(e), b = new LossValues(e);
      if (half != null) {
        j.losses(half, type, t, vj, lc, g, ng, gj, a);
        n.losses(half, type, t, vn, lc, g, ng, gn, b);
      } else {
        j.losses(l, t, vj, lc, g, ng, gj, a);
        n.losses(l, t, vn, lc, g, ng, gn, b);
      }
      assertEquals(a.validTokens(), b.validTokens(), where + ": N of the losses");
      assertArrayEquals(a.auxTokensPerExpert(), b.auxTokensPerExpert(), where + ": c");
      for (double[] x : new double[][] {{a.auxLoss(), b.auxLoss()}, {a.seqAuxLoss(), b.seqAuxLoss()},
          {a.globalAuxLoss(), b.globalAuxLoss()}, {a.zLoss(), b.zLoss()}})
        if (Double.doubleToLongBits(x[0]) != Double.doubleToLongBits(x[1]))
          fail(where + ": java " + a + " vs native " + b);
      for (int i = 0; i < gj.length; i++)
        if (Float.floatToIntBits(gj[i]) != Float.floatToIntBits(gn[i]))
          fail(where + ": gradient element " + i + ": java " + gj[i] + " vs native " + gn[i]);
    }
  }

  /**
   * The rules of LossConfig and of a losses call, with the texts of the native moe_losses_host (its rules are
   * reached directly through the binding, past the Java checks); a rejected call writes nothing.
   */
  @Test
  void invalidLossArgumentsAreRejectedWithTheRuleOnEveryBackend() {
    MoeRouterTest.assertInvalid(() -> LossConfig.builder().auxLoss(-1f).build(),
        "invalid loss config: aux loss coefficient must be finite and >= 0, got -1");
    MoeRouterTest.assertInvalid(() -> LossConfig.builder().zLoss(Float.NaN).build(),
        "invalid loss config: z-loss coefficient must be finite and >= 0, got nan");
    MoeRouterTest.assertInvalid(() -> LossConfig.builder().globalAuxLoss(Float.POSITIVE_INFINITY).build(),
        "invalid loss config: global aux loss coefficient must be finite and >= 0, got inf");
    MoeRouterTest.assertInvalid(() -> LossConfig.builder().seqAuxLoss(1f, 0, SeqLayout.SB).build(),
        "invalid loss config: seq aux loss needs a seq length >= 1, got 0");
    MoeRouterTest.assertInvalid(() -> r(null).auxLoss(new float[8], 1, -2f, null, null, null, null),
        "invalid loss config: aux loss coefficient must be finite and >= 0, got -2");
    int t = 6, e = 8;
    float[] l = ReplayTest.logits(t, e, 1);
    for (Backend backend : Backends.host()) {
      try (MoeRouter r = MoeRouter.create(RouterConfig.builder(e, 2).build(), backend)) {
        LossValues v = new LossValues(e);
        float[] grad = new float[t * e];
        MoeRouterTest.assertInvalid(() -> r.losses(l, t, null, LossConfig.builder().seqAuxLoss(1f, 4, SeqLayout.BS).build(),
            null, 0, grad, v), "seq aux loss: tokens (6) must be a multiple of the seq length (4)");
        LossConfig global = LossConfig.builder().globalAuxLoss(1f).build();
        MoeRouterTest.assertInvalid(() -> r.losses(l, t, null, global, null, 0, grad, v),
            "global aux loss needs the global tokens per expert (G [experts])");
        MoeRouterTest.assertInvalid(() -> r.losses(l, t, null, global, new double[e - 1], 0, grad, v),
            "globalTokensPerExpert holds 7 elements, needs 8");
        double[] g = new double[e];
        g[5] = -1;
        MoeRouterTest.assertInvalid(() -> r.losses(l, t, null, global, g, 3, grad, v),
            "global tokens per expert[5] must be finite and >= 0, got -1");
        g[5] = 1;
        MoeRouterTest.assertInvalid(() -> r.losses(l, t, null, global, g, Double.NaN, grad, v),
            "global num tokens must be finite and >= 0, got nan");
        MoeRouterTest.assertInvalid(() -> r.losses(l, t, new byte[t - 1], global, g, 3, grad, v),
            "validRows holds 5 elements, needs 6");
        MoeRouterTest.assertInvalid(() -> r.losses(l, t, null, global, g, 3, grad, new LossValues(e + 1)),
            "out holds values for 9 experts, the router has 8");
        for (float x : grad) assertEquals(0f, x, "a rejected call wrote a gradient");
      }
    }
    // The native rules themselves (the Java checks above run first on the Java API).
    try (MoeRouter r = MoeRouter.create(RouterConfig.builder(e, 2).build(), Backend.CPU)) {
      long h = ((NativeRouter) r).handle();
      double[] vals = new double[5];
      int[] counts = new int[e];
      Object[][] rules = {
          {-1f, 0f, 0f, 0f, 0L, 0, null, 0.0, "aux loss coefficient must be finite and >= 0, got -1"},
          {0f, Float.NaN, 0f, 0f, 0L, 0, null, 0.0, "seq aux loss coefficient must be finite and >= 0, got nan"},
          {0f, 0f, 0f, -0.5f, 0L, 0, null, 0.0, "z-loss coefficient must be finite and >= 0, got -0.5"},
          {0f, 1f, 0f, 0f, 0L, 0, null, 0.0, "seq aux loss needs a seq length >= 1, got 0"},
          {0f, 1f, 0f, 0f, 3L, 7, null, 0.0, "unknown seq layout 7"},
          {0f, 1f, 0f, 0f, 4L, 0, null, 0.0,
              "seq aux loss: tokens (6) must be a multiple of the seq length (4): tokens = seq length * batch"},
          {0f, 0f, 1f, 0f, 0L, 0, null, 0.0, "global aux loss needs the global tokens per expert (G [experts])"},
          {0f, 0f, 1f, 0f, 0L, 0, new double[] {0, 0, 0, Double.POSITIVE_INFINITY, 0, 0, 0, 0}, 0.0,
              "global tokens per expert[3] must be finite and >= 0, got inf"},
          {0f, 0f, 1f, 0f, 0L, 0, new double[e], -2.0, "global num tokens must be finite and >= 0, got -2"},
      };
      for (Object[] rule : rules) {
        int st = RouterNative.moe_jni_losses(h, l, 0, t, null, (float) rule[0], (float) rule[1], (float) rule[2],
            (float) rule[3], (long) rule[4], (int) rule[5], (double[]) rule[6], (double) rule[7], vals, counts, null,
            null, null);
        MoeRouterException ex = RouterNative.error(st, "losses");
        assertEquals(Status.INVALID_ARGUMENT, ex.status(), ex.getMessage());
        assertTrue(ex.getMessage().endsWith(": " + rule[8]), "native: '" + ex.getMessage() + "' lacks '" + rule[8] + "'");
      }
    }
  }

  private static MoeRouter r(RouterConfig c) {
    return MoeRouter.create(c != null ? c : RouterConfig.builder(8, 2).build(), Backend.JAVA);
  }

  static short[] bf16(float[] l) {
    short[] h = new short[l.length];
    for (int i = 0; i < l.length; i++) h[i] = (short) (Float.floatToRawIntBits(l[i]) >>> 16);
    return h;
  }

  static Float[] box(float[] a) {
    Float[] b = new Float[a.length];
    for (int i = 0; i < a.length; i++) b[i] = a[i];
    return b;
  }
}
