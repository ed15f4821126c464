// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Training path (spec sections 5 and 6): gradients by finite differences, losses, counts, dense views. */
class TrainingTest {
  static final RouterConfig[] CONFIGS = {
      RouterConfig.builder(24, 4).build(),
      RouterConfig.builder(24, 4).scale(2.5f).build(),
      RouterConfig.builder(20, 5).preSoftmax(true).build(),
      RouterConfig.builder(20, 5).preSoftmax(true).scale(1.7f).build(),
      RouterConfig.builder(16, 1).scoreFunction(ScoreFunction.SIGMOID).build(),
      RouterConfig.builder(24, 4).scoreFunction(ScoreFunction.SIGMOID).build(),
      RouterConfig.builder(32, 4).scoreFunction(ScoreFunction.SIGMOID)
          .expertBias(BackendEquivalenceTest.randomBias(new SplittableRandom(3), 32)).groups(8, 2).scale(2.5f).build(),
      RouterConfig.builder(30, 6).groups(5, 3).build(),
  };

  /** Central differences of f64-accumulated L(logits) = sum dW * w(logits) with the experts held fixed. */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void backwardMatchesFiniteDifferencesForLiveAndReplayedExperts(Backend backend) {
    SplittableRandom rnd = new SplittableRandom(42);
    for (RouterConfig c : CONFIGS) {
      int t = 6, e = c.experts(), k = c.topK();
      float[] l = ReplayTest.logits(t, e, rnd.nextLong());
      float[] dW = new float[t * k];
      for (int i = 0; i < dW.length; i++) dW[i] = (float) rnd.nextGaussian();
      try (MoeRouter r = MoeRouter.create(c, backend)) {
        int[] live = r.route(l, t).indices();
        int[] replayed = TestData.randomSelection(rnd, t, k, e);
        for (int[] idx : new int[][] {live, replayed}) {
          float[] grad = new float[t * e];
          r.backward(l, t, idx, dW, grad);
          float[] fd = new float[t * e];
          float h = 1e-2f;
          for (int i = 0; i < l.length; i++) {
            float saved = l[i];
            l[i] = saved + h;
            double plus = dot(dW, r.replay(l, t, idx, null).weights());
            l[i] = saved - h;
            double minus = dot(dW, r.replay(l, t, idx, null).weights());
            l[i] = saved;
            fd[i] = (float) ((plus - minus) / (2 * h));
          }
          assertGradClose(c + (idx == live ? " live" : " replayed"), fd, grad, 2e-3);
          if (!c.preSoftmax()) assertZeroOutside(c.toString(), grad, idx, t, k, e);
        }
      }
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void gradientsFlowThroughReplayedExpertsOutsideTheLiveTopK(Backend backend) {
    RouterConfig c = RouterConfig.builder(16, 2).scoreFunction(ScoreFunction.SIGMOID).build();
    float[] l = new float[16];
    for (int i = 0; i < 16; i++) l[i] = i * 0.25f;  // live top-2: experts 15, 14
    try (MoeRouter r = MoeRouter.create(c, backend)) {
      assertArrayEquals(new int[] {15, 14}, r.route(l, 1).indices());
      float[] grad = new float[16];
      r.backward(l, 1, new int[] {0, 3}, new float[] {1f, -2f}, grad);
      assertNotEquals(0f, grad[0]);
      assertNotEquals(0f, grad[3]);
      assertEquals(0f, grad[15]);
      assertEquals(0f, grad[14]);
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void auxLossMatchesADirectComputationAndItsGradientMatchesFiniteDifferences(Backend backend) {
    SplittableRandom rnd = new SplittableRandom(5);
    for (RouterConfig c : CONFIGS) {
      int t = 40, e = c.experts(), k = c.topK();
      float coeff = 0.01f;
      float[] l = ReplayTest.logits(t, e, rnd.nextLong());
      try (MoeRouter r = MoeRouter.create(c, backend)) {
        float[] scores = new float[t * e];
        byte[] map = new byte[t * e];
        int[] counts = new int[e];
        float[] grad = new float[t * e];
        float loss = r.auxLoss(l, t, coeff, scores, map, counts, grad);

        // Direct double-precision computation of the spec formula.
        double[] p = new double[e];
        int[] n = new int[e];
        for (int tok = 0; tok < t; tok++) {
          double[] s = new double[e];
          double z = 0, m = Double.NEGATIVE_INFINITY;
          for (int i = 0; i < e; i++) m = Math.max(m, l[tok * e + i]);
          for (int i = 0; i < e; i++) {
            s[i] = c.scoreFunction() == ScoreFunction.SOFTMAX ? Math.exp(l[tok * e + i] - m)
                : 1 / (1 + Math.exp(-l[tok * e + i]));
            z += s[i];
          }
          Integer[] order = new Integer[e];
          for (int i = 0; i < e; i++) {
            s[i] /= z;
            p[i] += s[i] / t;
            order[i] = i;
            assertEquals(s[i], scores[tok * e + i], 1e-6 * s[i] + 1e-9, "aux score");
          }
          final double[] fs = s;
          Arrays.sort(order, (a, b) -> fs[a] != fs[b] ? Double.compare(fs[b], fs[a]) : Integer.compare(a, b));
          for (int j = 0; j < k; j++) {
            n[order[j]]++;
            assertEquals(1, map[tok * e + order[j]], "top-k map");
          }
        }
        assertArrayEquals(n, counts, "plain top-k counts");
        int ones = 0;
        for (byte b : map) ones += b;
        assertEquals(t * k, ones);
        double expected = 0;
        for (int i = 0; i < e; i++) expected += (double) n[i] / (t * k) * p[i];
        expected *= coeff * e;
        assertEquals(expected, loss, 1e-5 * expected, c + ": aux loss");

        // Gradient: f is held constant (as in Megatron), so differentiate coeff * E / T * sum f_i S_ti
        // built in double from the returned per-element aux scores.
        double[] f = new double[e];
        for (int i = 0; i < e; i++) f[i] = (double) counts[i] / (t * k);
        float h = 1e-2f;
        float[] fd = new float[t * e];
        float[] sPlus = new float[t * e], sMinus = new float[t * e];
        for (int i = 0; i < l.length; i++) {
          float saved = l[i];
          l[i] = saved + h;
          r.auxLoss(l, t, coeff, sPlus, null, null, null);
          l[i] = saved - h;
          r.auxLoss(l, t, coeff, sMinus, null, null, null);
          l[i] = saved;
          int row = i / e;
          double diff = 0;
          for (int x = 0; x < e; x++) diff += f[x] * ((double) sPlus[row * e + x] - sMinus[row * e + x]);
          fd[i] = (float) ((double) coeff * e / t * diff / (2 * h));
        }
        assertGradClose(c + ": aux grad", fd, grad, 2e-3);
      }
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void zLossAndItsGradient(Backend backend) {
    int t = 12, e = 20;
    float coeff = 1e-3f;
    float[] l = ReplayTest.logits(t, e, 77);
    try (MoeRouter r = MoeRouter.create(RouterConfig.builder(e, 2).build(), backend)) {
      float[] grad = new float[t * e];
      Arrays.fill(grad, 0.5f);  // gradients accumulate
      float loss = r.zLoss(l, t, coeff, grad);
      double expected = 0;
      for (int tok = 0; tok < t; tok++) {
        double s = 0;
        for (int i = 0; i < e; i++) s += Math.exp(l[tok * e + i]);
        expected += Math.log(s) * Math.log(s);
      }
      expected = coeff * expected / t;
      assertEquals(expected, loss, 1e-5 * expected);
      float h = 1e-2f;
      float[] fd = new float[t * e];
      for (int i = 0; i < l.length; i++) {
        float saved = l[i];
        l[i] = saved + h;
        double plus = r.zLoss(l, t, coeff, null);
        l[i] = saved - h;
        double minus = r.zLoss(l, t, coeff, null);
        l[i] = saved;
        fd[i] = (float) ((plus - minus) / (2 * h)) + 0.5f;
      }
      assertGradClose("z-loss grad", fd, grad, 2e-3);
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void countsAndDenseViewsMatchTheSelection(Backend backend) {
    RouterConfig c = CONFIGS[6];
    int t = 500, e = c.experts(), k = c.topK();
    float[] l = ReplayTest.logits(t, e, 9);
    try (MoeRouter r = MoeRouter.create(c, backend)) {
      for (boolean replay : new boolean[] {false, true}) {
        RoutingResult res = replay
            ? r.replay(l, t, TestData.randomSelection(new SplittableRandom(2), t, k, e), null)
            : r.route(l, t);
        int[] hist = new int[e];
        for (int x : res.indices()) hist[x]++;
        assertArrayEquals(hist, r.tokensPerExpert(res.indices(), t, new int[e]));
        byte[] map = new byte[t * e];
        float[] probs = new float[t * e];
        long[] bits = new long[t];
        Arrays.fill(map, (byte) 9);
        Arrays.fill(probs, 9f);
        r.denseViews(res.indices(), res.weights(), t, map, probs);
        r.denseMapBits(res.indices(), t, bits);
        for (int tok = 0; tok < t; tok++) {
          int ones = 0;
          for (int i = 0; i < e; i++) {
            ones += map[tok * e + i];
            assertEquals(map[tok * e + i] == 1, (bits[tok] >>> i & 1) == 1);
            if (map[tok * e + i] == 0) assertEquals(0f, probs[tok * e + i]);
          }
          assertEquals(k, ones);
          for (int j = 0; j < k; j++) assertEquals(res.weight(tok, j), probs[tok * e + res.expert(tok, j)]);
        }
      }
      int[] bad = new int[t * k];
      MoeRouterException ex = assertThrows(MoeRouterException.class, () -> r.denseViews(bad, null, t, new byte[t * e], null));
      assertTrue(ex.getMessage().contains("row 0"), ex.getMessage());
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void expertBiasUpdateFollowsTheSignRule(Backend backend) {
    RouterConfig c = RouterConfig.builder(4, 1).scoreFunction(ScoreFunction.SIGMOID).build();
    try (MoeRouter r = MoeRouter.create(c, backend)) {
      float[] b = r.updateExpertBias(new int[] {10, 2, 6, 6}, 0.5f);  // mean 6
      assertArrayEquals(new float[] {-0.5f, 0.5f, 0f, 0f}, b);
      assertArrayEquals(b, r.expertBias());
      // The update steers selection: expert 1 wins a tie-free row where it was second.
      float[] l = {0.2f, 0.1f, -3f, -3f};
      assertEquals(1, r.route(l, 1).expert(0, 0));
      assertArrayEquals(new float[] {-1f, 1f, 0f, 0f}, r.updateExpertBias(new int[] {10, 2, 6, 6}, 0.5f));
    }
    try (MoeRouter softmax = MoeRouter.create(RouterConfig.builder(4, 1).build(), backend)) {
      assertThrows(MoeRouterException.class, () -> softmax.updateExpertBias(new int[4], 0.1f));
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"CPU"})
  void nativeLossesMatchTheJavaReference(Backend backend) {
    SplittableRandom rnd = new SplittableRandom(11);
    for (RouterConfig c : CONFIGS) {
      int t = 700, e = c.experts();
      float[] l = ReplayTest.logits(t, e, rnd.nextLong());
      try (MoeRouter j = MoeRouter.create(c, Backend.JAVA); MoeRouter n = MoeRouter.create(c, backend)) {
        float[] gj = new float[t * e], gn = new float[t * e];
        int[] cj = new int[e], cn = new int[e];
        assertEquals(j.auxLoss(l, t, 0.1f, null, null, cj, gj), n.auxLoss(l, t, 0.1f, null, null, cn, gn), 0f);
        assertArrayEquals(cj, cn);
        assertEquals(j.zLoss(l, t, 0.1f, gj), n.zLoss(l, t, 0.1f, gn), 1e-6f);
        BackendEquivalenceTest.assertWeights(c + " grads", gj, gn);
      }
    }
  }

  static double dot(float[] a, float[] b) {
    double s = 0;
    for (int i = 0; i < a.length; i++) s += (double) a[i] * b[i];
    return s;
  }

  static void assertGradClose(String what, float[] fd, float[] analytic, double tol) {
    double max = 1e-12;
    for (float g : analytic) max = Math.max(max, Math.abs(g));
    for (int i = 0; i < fd.length; i++)
      if (Math.abs(fd[i] - analytic[i]) > tol * (max + Math.abs(analytic[i])))
        fail(what + ": element " + i + ": finite difference " + fd[i] + " vs analytic " + analytic[i] + " (max " + max + ")");
  }

  static void assertZeroOutside(String what, float[] grad, int[] idx, int t, int k, int e) {
    for (int tok = 0; tok < t; tok++) {
      boolean[] sel = new boolean[e];
      for (int j = 0; j < k; j++) sel[idx[tok * k + j]] = true;
      for (int i = 0; i < e; i++) if (!sel[i]) assertEquals(0f, grad[tok * e + i], what + ": gradient outside the selection");
    }
  }
}
