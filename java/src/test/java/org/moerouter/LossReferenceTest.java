// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Arrays;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The section 6 losses and their gradients against float64 references written here from the spec's
 * formulas, with zero-initialised gradients (issue 17: a z-loss gradient missing its factor 2 passed a
 * test whose gradient was pre-filled and whose tolerance scaled with the largest entry), and above 256
 * tokens, where both backends sum per chunk of 256 rows.
 */
class LossReferenceTest {

  static double[] softmax(float[] l, int off, int e) {
    double max = Double.NEGATIVE_INFINITY;
    for (int i = 0; i < e; i++) max = Math.max(max, l[off + i]);
    double s = 0;
    double[] p = new double[e];
    for (int i = 0; i < e; i++) s += p[i] = Math.exp(l[off + i] - max);
    for (int i = 0; i < e; i++) p[i] /= s;
    return p;
  }

  static double logSumExp(float[] l, int off, int e) {
    double max = Double.NEGATIVE_INFINITY;
    for (int i = 0; i < e; i++) max = Math.max(max, l[off + i]);
    double s = 0;
    for (int i = 0; i < e; i++) s += Math.exp(l[off + i] - max);
    return max + Math.log(s);
  }

  /** Every element within rel * |expected| + abs; a wrong factor (x2, x0.5) is far outside. */
  static void assertClose(String what, double[] expected, float[] actual, double rel, double abs) {
    for (int i = 0; i < expected.length; i++)
      if (!Backends.close(actual[i], expected[i], rel, abs))
        fail(what + ": element " + i + ": expected " + expected[i] + ", got " + actual[i]);
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void zLossGradientIsTwoCoeffLseSoftmaxOverTokens(Backend backend) {
    for (int t : new int[] {1, 7, 700}) {
      final int e = 24;
      final float coeff = 0.37f;
      float[] l = ReplayTest.logits(t, e, 31 + t);
      for (int i = 0; i < l.length; i++) l[i] = 2f * l[i] + 1.5f;  // lse well away from 0
      double loss = 0;
      double[] grad = new double[t * e];
      for (int tok = 0; tok < t; tok++) {
        double lse = logSumExp(l, tok * e, e);
        loss += lse * lse;
        double[] p = softmax(l, tok * e, e);
        for (int i = 0; i < e; i++) grad[tok * e + i] = coeff * 2.0 * lse * p[i] / t;
      }
      loss = coeff * loss / t;
      try (MoeRouter r = MoeRouter.create(RouterConfig.builder(e, 3).build(), backend)) {
        float[] g = new float[t * e];
        float got = r.zLoss(l, t, coeff, g);
        assertEquals(loss, got, 2e-6 * loss, backend + " T=" + t + " loss");
        assertClose(backend + " T=" + t + " z-loss gradient", grad, g, 2e-5, 1e-12);
        // The gradient is added: a second call doubles it.
        r.zLoss(l, t, coeff, g);
        for (int i = 0; i < grad.length; i++) grad[i] *= 2;
        assertClose(backend + " T=" + t + " accumulated", grad, g, 2e-5, 1e-12);
      }
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void auxLossAboveOneChunkMatchesTheReference(Backend backend) {
    // 1000 rows: three full chunks of 256 and a partial one.
    final int t = 1000, e = 40, k = 5;
    final float coeff = 0.01f;
    for (ScoreFunction sf : new ScoreFunction[] {ScoreFunction.SOFTMAX, ScoreFunction.SIGMOID}) {
      float[] l = ReplayTest.logits(t, e, 5 + sf.ordinal());
      double[][] a = new double[t][];
      int[] counts = new int[e];
      byte[] map = new byte[t * e];
      double[] colSum = new double[e];
      for (int tok = 0; tok < t; tok++) {
        if (sf == ScoreFunction.SOFTMAX) {
          a[tok] = softmax(l, tok * e, e);
        } else {
          a[tok] = new double[e];
          double z = 1e-20;
          for (int i = 0; i < e; i++) z += a[tok][i] = 1 / (1 + Math.exp(-l[tok * e + i]));
          for (int i = 0; i < e; i++) a[tok][i] /= z;
        }
        // The k largest logits, ties to the lower index (there are none in Gaussian data).
        Integer[] order = new Integer[e];
        for (int i = 0; i < e; i++) order[i] = i;
        final int row = tok;
        Arrays.sort(order, (x, y) -> l[row * e + x] != l[row * e + y] ? Float.compare(l[row * e + y], l[row * e + x]) : x - y);
        for (int j = 0; j < k; j++) {
          counts[order[j]]++;
          map[tok * e + order[j]] = 1;
        }
        for (int i = 0; i < e; i++) colSum[i] += a[tok][i];
      }
      double loss = 0;
      for (int i = 0; i < e; i++) loss += (double) counts[i] * colSum[i];
      loss *= coeff * e / ((double) k * t * t);
      double[] grad = new double[t * e];
      for (int tok = 0; tok < t; tok++) {
        double[] dA = new double[e];
        for (int i = 0; i < e; i++) dA[i] = coeff * e * counts[i] / ((double) k * t * t);
        if (sf == ScoreFunction.SOFTMAX) {
          double dot = 0;
          for (int i = 0; i < e; i++) dot += a[tok][i] * dA[i];
          for (int i = 0; i < e; i++) grad[tok * e + i] = a[tok][i] * (dA[i] - dot);
        } else {
          double z = 1e-20, dot = 0;
          double[] s = new double[e];
          for (int i = 0; i < e; i++) z += s[i] = 1 / (1 + Math.exp(-l[tok * e + i]));
          for (int i = 0; i < e; i++) dot += dA[i] * s[i];
          for (int i = 0; i < e; i++) grad[tok * e + i] = (dA[i] / z - dot / (z * z)) * s[i] * (1 - s[i]);
        }
      }
      String where = backend + " " + sf;
      RouterConfig c = RouterConfig.builder(e, k).scoreFunction(sf).build();
      try (MoeRouter r = MoeRouter.create(c, backend)) {
        float[] scores = new float[t * e];
        byte[] gotMap = new byte[t * e];
        int[] gotCounts = new int[e];
        float[] g = new float[t * e];
        float got = r.auxLoss(l, t, coeff, scores, gotMap, gotCounts, g);
        assertEquals(loss, got, 1e-5 * loss, where + " loss");
        assertArrayEquals(counts, gotCounts, where + " counts");
        assertArrayEquals(map, gotMap, where + " map");
        double[] flat = new double[t * e];
        for (int tok = 0; tok < t; tok++) System.arraycopy(a[tok], 0, flat, tok * e, e);
        assertClose(where + " scores", flat, scores, 1e-5, 1e-9);
        double max = 0;
        for (double x : grad) max = Math.max(max, Math.abs(x));
        // Softmax gradients are differences of nearby terms: an absolute floor of 1e-5 of the largest.
        assertClose(where + " gradient", grad, g, 1e-4, 1e-5 * max);
      }
    }
  }
}
