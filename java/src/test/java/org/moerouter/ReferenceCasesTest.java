// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import org.junit.jupiter.api.Test;

/**
 * Hand-written cases the goldens lack (issue 17): exact bf16 ties, NaN and +-inf rows, +-0 and
 * subnormals, k = 1 with a scale. Each expectation is written here from docs/semantics.md; JAVA and CPU
 * must both meet it, bit for bit where the value is exact.
 */
class ReferenceCasesTest {
  static final float NAN = Float.NaN, INF = Float.POSITIVE_INFINITY, SUB = Float.intBitsToFloat(0x00010000);  // subnormal in fp32 and in bf16
  static final Backend[] HOST = {Backend.JAVA, Backend.CPU};

  static short bf16(float v) {
    int bits = Float.floatToRawIntBits(v);
    assertEquals(0, bits & 0xffff, "not bf16-exact: " + v);
    return (short) (bits >>> 16);
  }

  static double sigmoid(double x) {
    return 1 / (1 + Math.exp(-x));
  }

  /** Routes on every host backend and checks indices exactly and weights to {@code tol} (0: bit for bit). */
  static void check(String what, RouterConfig c, float[] logits, int t, int[] expIdx, double[] expW, double tol,
      long expNonfinite) {
    int k = c.topK();
    for (Backend b : HOST) {
      String where = what + " on " + b;
      try (MoeRouter r = MoeRouter.create(c, b)) {
        int[] idx = new int[t * k];
        float[] w = new float[t * k];
        short[] half = new short[logits.length];
        for (int i = 0; i < half.length; i++) half[i] = bf16(logits[i]);
        for (boolean asBf16 : new boolean[] {false, true}) {
          long nf = asBf16 ? r.route(half, LogitsType.BF16, t, idx, w) : r.route(logits, t, idx, w);
          String at = where + (asBf16 ? " (bf16)" : " (fp32)");
          assertEquals(expNonfinite, nf, at + ": non-finite rows");
          assertArrayEquals(expIdx, idx, at + ": indices");
          for (int i = 0; i < w.length; i++) {
            if (Double.isNaN(expW[i])) assertTrue(Float.isNaN(w[i]), at + ": weight " + i + " = " + w[i] + ", expected NaN");
            else if (tol == 0) assertEquals((float) expW[i], w[i], 0f, at + ": weight " + i);
            else assertEquals(expW[i], w[i], tol * Math.abs(expW[i]) + 1e-30, at + ": weight " + i);
          }
          // Replaying the indices just produced gives the same weights (NaN where live gave NaN).
          float[] w2 = new float[t * k];
          if (asBf16) r.replay(half, LogitsType.BF16, t, idx.clone(), null, new int[t * k], w2);
          else r.replay(logits, t, idx.clone(), null, new int[t * k], w2);
          for (int i = 0; i < w.length; i++)
            assertEquals(Float.floatToIntBits(w[i]), Float.floatToIntBits(w2[i]), at + ": replayed weight " + i);
        }
      }
    }
  }

  @Test
  void exactTiesGoToTheLowerIndexInEveryScoreFunction() {
    // Row 0: four equal maxima; row 1: the tie straddles the k-th place; row 2: everything equal.
    float[] l = {1, 1, 1, 1, .5f, .5f, .5f, .5f,
        .5f, 2, .5f, 2, .5f, .5f, .5f, .5f,
        -3, -3, -3, -3, -3, -3, -3, -3};
    int[] idx = {0, 1, 2, 1, 3, 0, 0, 1, 2};
    double third = 1.0 / 3;
    double e2 = Math.exp(2), eh = Math.exp(.5);
    double[] post = {third, third, third, e2 / (2 * e2 + eh), e2 / (2 * e2 + eh), eh / (2 * e2 + eh), third, third, third};
    check("softmax post ties", RouterConfig.builder(8, 3).build(), l, 3, idx, post, 1e-6, 0);
    // sigmoid, normalised: equal scores give exactly 1/3 each before the scale.
    double s2 = sigmoid(2), sh = sigmoid(.5);
    double[] sig = {third * 1.5, third * 1.5, third * 1.5, s2 / (2 * s2 + sh) * 1.5, s2 / (2 * s2 + sh) * 1.5,
        sh / (2 * s2 + sh) * 1.5, third * 1.5, third * 1.5, third * 1.5};
    check("sigmoid ties", RouterConfig.builder(8, 3).scoreFunction(ScoreFunction.SIGMOID).scale(1.5f).build(), l, 3, idx,
        sig, 1e-6, 0);
    // Grouped (4 groups of 2, keep 2, MAX): row 0's group scores tie (1, 1, .5, .5): groups 0 and 1.
    RouterConfig grouped = RouterConfig.builder(8, 3).scoreFunction(ScoreFunction.SIGMOID).groups(4, 2)
        .groupScore(GroupScore.MAX).build();
    double[] g = {third, third, third, s2 / (2 * s2 + sh), s2 / (2 * s2 + sh), sh / (2 * s2 + sh), third, third, third};
    check("grouped ties", grouped, l, 3, idx, g, 1e-6, 0);
  }

  @Test
  void nanAndInfinitiesRankAsTheSpecSays() {
    // NaN below -inf below every finite value; +inf above; ties lower index. Softmax post weights:
    // row 0 reads +inf (inf - inf = NaN), rows 1-3 read -inf or NaN only where the row holds them.
    float[] l = {NAN, -INF, 1, NAN, INF, 0, -1, -2,
        NAN, NAN, -INF, NAN, -INF, NAN, NAN, NAN,
        NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN,
        -INF, -INF, -INF, 5, -INF, -INF, -INF, -INF};
    int[] idx = {4, 2, 5, 2, 4, 0, 0, 1, 2, 3, 0, 1};
    double n = Double.NaN;
    // Row 3: softmax over (5, -inf, -inf) = (1, 0, 0) exactly, but the row holds -inf: counted.
    double[] w = {n, n, n, n, n, n, n, n, n, 1, 0, 0};
    check("non-finite rows", RouterConfig.builder(8, 3).build(), l, 4, idx, w, 0, 4);
    // Sigmoid: S(+inf) = 1, S(-inf) = 0, S(NaN) = NaN; normalised by the sum.
    double s1 = sigmoid(1), s0 = 0.5;
    double[] sig = {1 / (1 + s1 + s0), s1 / (1 + s1 + s0), s0 / (1 + s1 + s0), 0, 0, 0, n, n, n, 1, 0, 0};
    // Row 1 weights: S = (0, 0, NaN) → NaN sum: every weight NaN. Row 2: all NaN.
    sig[3] = n;
    sig[4] = n;
    sig[5] = n;
    check("non-finite rows, sigmoid", RouterConfig.builder(8, 3).scoreFunction(ScoreFunction.SIGMOID).build(), l, 4, idx,
        sig, 1e-6, 4);
  }

  @Test
  void signedZerosAreEqualAndSubnormalsAreNotZero() {
    // -0 and +0 tie (lower index first); the smallest subnormal ranks above both, -SUB below.
    float[] l = {-0f, 0f, -SUB, SUB, -0f, 0f, -1, -2,
        0f, -0f, -0f, 0f, -SUB, -SUB, -1, -1,
        -SUB, -1, -1, -1, -1, -1, -1, -0f};
    int[] idx = {3, 0, 1, 0, 1, 2, 7, 0, 1};
    double third = 1.0 / 3;
    double e1 = Math.exp(-1);
    double[] post = {third, third, third, third, third, third, 1 / (2 + e1), 1 / (2 + e1), e1 / (2 + e1)};
    check("signed zeros and subnormals", RouterConfig.builder(8, 3).build(), l, 3, idx, post, 1e-6, 0);
    // sigmoid of +-0 and +-SUB is 0.5 exactly; the ranking still uses L (no bias).
    double s = sigmoid(-1);
    double[] sig = {third, third, third, third, third, third, .5 / (1 + s), .5 / (1 + s), s / (1 + s)};
    check("signed zeros and subnormals, sigmoid", RouterConfig.builder(8, 3).scoreFunction(ScoreFunction.SIGMOID).build(),
        l, 3, idx, sig, 1e-6, 0);
  }

  @Test
  void topOneIsNeverNormalisedAndIsScaled() {
    float[] l = {.5f, 2, -1, 1, 0, .25f, -2, 1.5f,
        -1, -1, -1, -1, -1, -1, -1, -1};
    int[] idx = {1, 0};
    // sigmoid k = 1: w = S * scale (Megatron), not 1 * scale.
    check("sigmoid k=1", RouterConfig.builder(8, 1).scoreFunction(ScoreFunction.SIGMOID).scale(2.5f).build(), l, 2, idx,
        new double[] {sigmoid(2) * 2.5, sigmoid(-1) * 2.5}, 1e-6, 0);
    // sqrtsoftplus k = 1: w = sqrt(softplus(L)) * scale.
    check("sqrtsoftplus k=1", RouterConfig.builder(8, 1).scoreFunction(ScoreFunction.SQRTSOFTPLUS).scale(2.5f).build(), l,
        2, idx, new double[] {Math.sqrt(Math.log1p(Math.exp(2))) * 2.5, Math.sqrt(Math.log1p(Math.exp(-1))) * 2.5}, 1e-6, 0);
    // softmax pre k = 1: w = P[idx] * scale, P over the whole row.
    double z = 0;
    for (int i = 0; i < 8; i++) z += Math.exp(l[i]);
    check("softmax pre k=1", RouterConfig.builder(8, 1).preSoftmax(true).scale(2.5f).build(), l, 2, idx,
        new double[] {Math.exp(2) / z * 2.5, 1.0 / 8 * 2.5}, 1e-6, 0);
    // softmax post k = 1: softmax of one logit is exactly 1, times the scale.
    check("softmax post k=1", RouterConfig.builder(8, 1).scale(2.5f).build(), l, 2, idx, new double[] {2.5, 2.5}, 0, 0);
  }

  /** IEEE binary16 decoded from its fields, independently of the library. */
  static double half(int h) {
    int sign = (h >>> 15) & 1, exp = (h >>> 10) & 0x1f, man = h & 0x3ff;
    double v = exp == 0x1f ? (man == 0 ? Double.POSITIVE_INFINITY : Double.NaN)
        : exp == 0 ? man * Math.pow(2, -24) : (1 + man / 1024.0) * Math.pow(2, exp - 15);
    return sign == 1 ? -v : v;
  }

  @Test
  void everyFp16ValueDecodesExactly() {
    for (int h = 0; h < 1 << 16; h++) {
      float got = JavaRouting.f16ToFloat((short) h);
      double want = half(h);
      if (Double.isNaN(want)) assertTrue(Float.isNaN(got), Integer.toHexString(h));
      else assertEquals(Float.floatToRawIntBits((float) want), Float.floatToRawIntBits(got), Integer.toHexString(h));
    }
    // Both backends route fp16 rows as the same values in fp32: subnormal halves, the smallest normal,
    // the largest finite, +-0, +-inf and NaN, where the order depends on every bit of the decoding.
    short[] h = {0x0001, 0x0002, 0x03ff, 0x0400, (short) 0x8001, (short) 0x8000, 0x0000, 0x0200,
        0x3c01, 0x3c00, 0x7bff, (short) 0xfbff, 0x7c00, (short) 0xfc00, 0x7e00, 0x3bff};
    float[] f = new float[h.length];
    for (int i = 0; i < h.length; i++) f[i] = (float) half(h[i] & 0xffff);
    for (Backend b : HOST)
      for (RouterConfig c : new RouterConfig[] {RouterConfig.builder(8, 8).build(),
          RouterConfig.builder(8, 4).scoreFunction(ScoreFunction.SIGMOID).scale(3f).build()})
        try (MoeRouter r = MoeRouter.create(c, b)) {
          int k = c.topK();
          int[] i16 = new int[2 * k], i32 = new int[2 * k];
          float[] w16 = new float[2 * k], w32 = new float[2 * k];
          assertEquals(r.route(f, 2, i32, w32), r.route(h, LogitsType.FP16, 2, i16, w16), b + " " + c);
          assertArrayEquals(i32, i16, b + " " + c);
          for (int j = 0; j < w16.length; j++)
            assertEquals(Float.floatToIntBits(w32[j]), Float.floatToIntBits(w16[j]), b + " " + c + " weight " + j);
          if (k == 8) assertArrayEquals(new int[] {3, 2, 7, 1, 0, 5, 6, 4}, Arrays.copyOf(i16, 8), b + " row 0 order");
        }
  }
}
