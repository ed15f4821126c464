// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * The CPU backend's results do not depend on the calling thread's floating-point environment (issue 10
 * item 3): called from a thread with FTZ and/or DAZ set in MXCSR (what a -ffast-math library or oneDNN
 * leaves behind), route, replay and backward give the bits of the pure-Java reference, serially and on
 * the worker pool, and the caller's MXCSR comes back unchanged. The inputs are chosen so that FTZ/DAZ
 * would change them: subnormal logits (DAZ reads them as 0, which changes their score keys and ties),
 * softmax spreads of 88-104 (subnormal exponentials and weights), sqrtsoftplus of -88..-104 (a subnormal
 * exp whose log1p is itself) and sigmoid near its underflow.
 */
@ExtendWith(RestoreCpuThreads.class)
class FpEnvTest {
  @BeforeAll
  static void needsNative() {
    Assumptions.assumeTrue(NativeLibrary.loaded(), "native library not loaded");
  }

  static float[] logits(SplittableRandom rnd, int tokens, int e) {
    float[] special = {Float.MIN_VALUE, -Float.MIN_VALUE, Float.MIN_NORMAL / 3, -Float.MIN_NORMAL / 7,
        Math.nextDown(Float.MIN_NORMAL), 0f, -0f, -90f, -95f, -100f, -103f, -87.5f, 10f, 12f};
    float[] l = new float[tokens * e];
    for (int t = 0; t < tokens; t++) {
      // Rows of a few large logits over a tail of subnormals and very negative values: the weights of the
      // tail (softmax pre, post when selected) are subnormal, and the top-k ties are broken by subnormals.
      for (int i = 0; i < e; i++)
        l[t * e + i] = rnd.nextInt(4) == 0 ? (float) rnd.nextGaussian() * 3 : special[rnd.nextInt(special.length)];
    }
    return l;
  }

  static RouterConfig[] configs(SplittableRandom rnd, int e) {
    float[] bias = new float[e];
    for (int i = 0; i < e; i++) bias[i] = rnd.nextInt(3) == 0 ? Float.MIN_VALUE * (1 + rnd.nextInt(50)) : 0f;
    return new RouterConfig[] {
        RouterConfig.builder(e, 6).build(),  // softmax post
        RouterConfig.builder(e, 8).build(),
        RouterConfig.builder(e, 6).preSoftmax(true).build(),
        RouterConfig.builder(e, 8).scoreFunction(ScoreFunction.SIGMOID).expertBias(bias).groups(8, 4).build(),
        RouterConfig.builder(e, 8).scoreFunction(ScoreFunction.SQRTSOFTPLUS).expertBias(bias).build(),
        RouterConfig.builder(e, 4).scoreFunction(ScoreFunction.SQRTSOFTPLUS).build(),
    };
  }

  @Test
  void ftzAndDazOnTheCallingThreadChangeNoBit() {
    SplittableRandom rnd = new SplittableRandom(0xF7DA2L);
    int e = 64;
    for (int tokens : new int[] {37, 4096}) {  // serial; on the pool (tokens * e above the parallel threshold)
      float[] l = logits(rnd, tokens, e);
      for (RouterConfig c : configs(rnd, e)) {
        for (int threads : tokens > 1000 ? new int[] {1, 2} : new int[] {1}) {
          MoeRouter.setCpuThreads(threads);
          check(c, l, tokens, rnd, c + " T=" + tokens + " threads=" + threads);
        }
      }
    }
  }

  private static void check(RouterConfig c, float[] l, int tokens, SplittableRandom rnd, String where) {
    int k = c.topK(), e = c.experts();
    try (MoeRouter java = MoeRouter.create(c, Backend.JAVA); MoeRouter cpu = MoeRouter.create(c, Backend.CPU)) {
      long h = ((NativeRouter) cpu).handle();
      RoutingResult ref = java.route(l, tokens);
      int[] forced = TestData.randomSelection(rnd, tokens, k, e);
      RoutingResult refReplay = java.replay(l, tokens, forced, null);
      float[] dw = new float[tokens * k];
      for (int i = 0; i < dw.length; i++) dw[i] = (float) rnd.nextGaussian();
      float[] refGrad = new float[tokens * e];
      java.backward(l, tokens, ref.indices(), dw, refGrad);
      for (int mode = 1; mode <= 3; mode++) {
        String at = where + (mode == 1 ? " FTZ" : mode == 2 ? " DAZ" : " FTZ+DAZ");
        int[] idx = new int[tokens * k];
        float[] w = new float[tokens * k];
        byte[] flags = new byte[tokens];
        long r = RouterNative.moe_jni_test_fpenv_call(h, mode, 0, l, 0, tokens, null, idx, w, flags, null);
        if (r == -Status.UNSUPPORTED.code()) Assumptions.abort("MXCSR test hook is x86-64 only");
        if (r == -Status.INTERNAL.code()) fail(at + ": the caller's MXCSR was not restored");
        assertEquals(ref.nonfiniteRows(), r, at + ": non-finite rows");
        same(ref.indices(), idx, at + " route indices");
        same(ref.weights(), w, at + " route weights");
        r = RouterNative.moe_jni_test_fpenv_call(h, mode, 0, l, 0, tokens, forced, idx, w, flags, null);
        assertEquals(refReplay.nonfiniteRows(), r, at + ": replay non-finite rows");
        same(refReplay.weights(), w, at + " replay weights");
        float[] grad = new float[tokens * e];
        r = RouterNative.moe_jni_test_fpenv_call(h, mode, 1, l, 0, tokens, ref.indices(), null, dw, null, grad);
        assertEquals(0, r, at + ": backward status");
        same(refGrad, grad, at + " backward");
      }
    }
  }

  /** The section 6 losses and token dropping (of subnormal weights), under FTZ and DAZ, give the Java bits. */
  @Test
  void ftzAndDazChangeNoBitOfTheLossesOrTheDropping() {
    SplittableRandom rnd = new SplittableRandom(0x10556L);
    int e = 64;
    for (int tokens : new int[] {37, 4096}) {
      float[] l = logits(rnd, tokens, e);
      for (RouterConfig c : configs(rnd, e)) {
        for (int threads : tokens > 1000 ? new int[] {1, 2} : new int[] {1}) {
          MoeRouter.setCpuThreads(threads);
          String where = c + " T=" + tokens + " threads=" + threads;
          int k = c.topK();
          try (MoeRouter java = MoeRouter.create(c, Backend.JAVA); MoeRouter cpu = MoeRouter.create(c, Backend.CPU)) {
            long h = ((NativeRouter) cpu).handle();
            float[] refGrad = new float[tokens * e];
            LossValues ref = java.losses(l, tokens, null, LossConfig.builder().auxLoss(0.5f).zLoss(0.25f).build(), null, 0,
                refGrad, new LossValues(e));
            // Weights of subnormals and zeros: DAZ would read them as 0 and tie them with the tokens not routed
            // to the expert (prob 0), which the lower index then wins.
            int[] sel = TestData.randomSelection(rnd, tokens, k, e);
            float[] w = new float[tokens * k];
            for (int i = 0; i < w.length; i++)
              w[i] = rnd.nextInt(4) == 0 ? 0f : Float.MIN_VALUE * (1 + rnd.nextInt(8)) * (rnd.nextInt(3) == 0 ? 1000 : 1);
            TokenDropping d = TokenDropping.of(0.5, DropPolicy.PROBS, false);
            byte[] refMap = new byte[tokens * e], refKept = new byte[tokens * k];
            float[] refProbs = new float[tokens * e];
            java.dropTokens(d, sel, w, tokens, refMap, refProbs, refKept, null);
            for (int mode = 1; mode <= 3; mode++) {
              String at = where + (mode == 1 ? " FTZ" : mode == 2 ? " DAZ" : " FTZ+DAZ");
              double[] v = new double[5];
              int[] counts = new int[e];
              float[] grad = new float[tokens * e];
              long r = RouterNative.moe_jni_test_fpenv_training(h, mode, 0, l, tokens, 0.5f, 0.25f, v, counts, grad, null,
                  null, 0, null, null, null);
              if (r == -Status.UNSUPPORTED.code()) Assumptions.abort("MXCSR test hook is x86-64 only");
              if (r == -Status.INTERNAL.code()) fail(at + ": the caller's MXCSR was not restored");
              assertEquals(0, r, at + ": losses status");
              assertEquals(Double.doubleToLongBits(ref.auxLoss()), Double.doubleToLongBits(v[0]), at + " aux loss");
              assertEquals(Double.doubleToLongBits(ref.zLoss()), Double.doubleToLongBits(v[3]), at + " z-loss");
              same(ref.auxTokensPerExpert(), counts, at + " aux counts");
              same(refGrad, grad, at + " loss gradient");
              byte[] map = new byte[tokens * e], kept = new byte[tokens * k];
              float[] probs = new float[tokens * e];
              r = RouterNative.moe_jni_test_fpenv_training(h, mode, 1, null, tokens, 0, 0, null, null, null,
                  sel, w, 0.5, map, probs, kept);
              assertEquals(0, r, at + ": drop status");
              for (int i = 0; i < map.length; i++) if (map[i] != refMap[i]) fail(at + " drop map differs at " + i);
              for (int i = 0; i < kept.length; i++) if (kept[i] != refKept[i]) fail(at + " kept differs at " + i);
              same(refProbs, probs, at + " drop probs");
            }
          }
        }
      }
    }
  }

  private static void same(int[] a, int[] b, String what) {
    for (int i = 0; i < a.length; i++)
      if (a[i] != b[i]) fail(what + ": differ at " + i + ": " + a[i] + " vs " + b[i]);
  }

  private static void same(float[] a, float[] b, String what) {
    for (int i = 0; i < a.length; i++)
      if (Float.floatToRawIntBits(a[i]) != Float.floatToRawIntBits(b[i]))
        fail(what + ": differ at " + i + ": " + a[i] + " vs " + b[i] + " (bits " + Integer.toHexString(Float.floatToRawIntBits(a[i]))
            + " vs " + Integer.toHexString(Float.floatToRawIntBits(b[i])) + ")");
  }
}
