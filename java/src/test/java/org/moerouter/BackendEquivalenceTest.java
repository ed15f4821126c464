// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * Randomised property tests: the native CPU backend against the pure-Java reference on thousands of
 * configurations and shapes (T = 0 and 1, E not a power of two, k = 1 and k = E, grouped selection,
 * bf16/fp16 inputs with exact ties, NaN and infinite logits). Indices must be bit-identical and
 * weights within 1e-6 relative; gradients too.
 */
class BackendEquivalenceTest {
  static final int CONFIGS = 3000;

  @Test
  void nativeCpuMatchesJavaOnRandomConfigs() {
    SplittableRandom rnd = new SplittableRandom(20261123);
    for (int iter = 0; iter < CONFIGS; iter++) {
      RouterConfig config = randomConfig(rnd);
      int tokens = randomTokens(rnd, config.experts());
      LogitsType type = LogitsType.values()[rnd.nextInt(3)];
      int mode = rnd.nextInt(6);  // 0 ties, 1 non-finite, else plain
      String where = "case " + iter + ": " + config + ", T=" + tokens + ", " + type + ", mode " + mode;
      compare(config, tokens, type, mode, rnd, where);
    }
  }

  @Test
  void largeCallsUseTheThreadPoolAndStillAgree() {
    SplittableRandom rnd = new SplittableRandom(7);
    RouterConfig grouped = RouterConfig.builder(256, 8).scoreFunction(ScoreFunction.SIGMOID)
        .expertBias(randomBias(rnd, 256)).groups(8, 4).scale(2.5f).build();
    RouterConfig softmax = RouterConfig.builder(130, 10).build();
    for (RouterConfig c : new RouterConfig[] {grouped, softmax})
      for (LogitsType t : LogitsType.values()) compare(c, 3001, t, 0, rnd, "large " + c + " " + t);
  }

  /** Arguments at the edges of exp's range, signed zeros, subnormals and huge values. */
  @Test
  void edgeValuesAgreeForEveryScoreFunction() {
    float[] special = {0f, -0f, Float.MIN_VALUE, -Float.MIN_VALUE, 88.72283935546875f, -88.72283935546875f,
        Math.nextUp(88.72283935546875f), 103.97208404541015625f, -103.97208404541015625f,
        Math.nextDown(-103.97208404541015625f), 1e30f, -1e30f, 150f, -150f, 0.5f, -0.5f, 20f, -20f, 17.3f, 16.9f,
        Float.MAX_VALUE, -Float.MAX_VALUE, 1e-3f, -1e-3f};
    SplittableRandom rnd = new SplittableRandom(99);
    int e = special.length, tokens = 400;
    float[] l = new float[tokens * e];
    for (int t = 0; t < tokens; t++)
      for (int i = 0; i < e; i++) l[t * e + i] = rnd.nextInt(3) == 0 ? (float) rnd.nextGaussian() * 50 : special[rnd.nextInt(e)];
    for (RouterConfig c : new RouterConfig[] {RouterConfig.builder(e, 4).scoreFunction(ScoreFunction.SIGMOID).build(),
        RouterConfig.builder(e, 4).preSoftmax(true).build(), RouterConfig.builder(e, 6).groups(4, 2).build(),
        // k >= 8: the weights of the selected experts go through the SIMD exp/sigmoid lanes
        RouterConfig.builder(e, 8).build(), RouterConfig.builder(e, 9).preSoftmax(true).build(),
        RouterConfig.builder(e, 10).scoreFunction(ScoreFunction.SIGMOID).build(),
        RouterConfig.builder(e, 6).scoreFunction(ScoreFunction.SIGMOID).expertBias(randomBias(rnd, e)).groups(3, 3).build()}) {
      try (MoeRouter java = MoeRouter.create(c, Backend.JAVA); MoeRouter cpu = MoeRouter.create(c, Backend.CPU)) {
        RoutingResult a = java.route(l, tokens), b = cpu.route(l, tokens);
        if (!Arrays.equals(a.indices(), b.indices())) fail(c + ": indices differ at " + firstDiff(a.indices(), b.indices()));
        assertArrayEquals(a.weights(), b.weights(), 0f, c + ": weights bit for bit");
        int[] forced = TestData.randomSelection(rnd, tokens, c.topK(), e);
        assertArrayEquals(java.replay(l, tokens, forced, null).weights(), cpu.replay(l, tokens, forced, null).weights(), 0f,
            c + ": replay weights bit for bit");
      }
    }
  }

  static void compare(RouterConfig config, int tokens, LogitsType type, int mode, SplittableRandom rnd, String where) {
    int e = config.experts();
    int k = config.topK();
    float[] f32 = new float[tokens * e];
    short[] half = new short[tokens * e];
    fillLogits(rnd, f32, half, type, mode);
    try (MoeRouter java = MoeRouter.create(config, Backend.JAVA);
        MoeRouter cpu = MoeRouter.create(config, Backend.CPU)) {
      int[] idxJ = new int[tokens * k], idxC = new int[tokens * k];
      float[] wJ = new float[tokens * k], wC = new float[tokens * k];
      long nfJ = type == LogitsType.FP32 ? java.route(f32, tokens, idxJ, wJ) : java.route(half, type, tokens, idxJ, wJ);
      long nfC = type == LogitsType.FP32 ? cpu.route(f32, tokens, idxC, wC) : cpu.route(half, type, tokens, idxC, wC);
      assertEquals(nfJ, nfC, where + ": non-finite row count");
      if (!Arrays.equals(idxJ, idxC)) fail(where + ": indices differ at " + firstDiff(idxJ, idxC));
      assertWeights(where + ": live weights", wJ, wC);
      assertRowsValid(where, idxC, tokens, k, e);

      // Replay random distinct experts (partial, with a mask) and compare again.
      int[] replay = TestData.randomSelection(rnd, tokens, k, e);
      byte[] mask = rnd.nextBoolean() ? null : randomMask(rnd, tokens);
      Arrays.fill(idxJ, -7);
      Arrays.fill(idxC, -7);
      if (type == LogitsType.FP32) {
        java.replay(f32, tokens, replay, mask, idxJ, wJ);
        cpu.replay(f32, tokens, replay, mask, idxC, wC);
      } else {
        java.replay(half, type, tokens, replay, mask, idxJ, wJ);
        cpu.replay(half, type, tokens, replay, mask, idxC, wC);
      }
      if (!Arrays.equals(idxJ, idxC)) fail(where + ": replay indices differ at " + firstDiff(idxJ, idxC));
      for (int t = 0; t < tokens; t++)
        if (mask == null || mask[t] != 0)
          for (int j = 0; j < k; j++) assertEquals(replay[t * k + j], idxC[t * k + j], where + ": replayed expert");
      assertWeights(where + ": replay weights", wJ, wC);

      if (mode != 1 && rnd.nextInt(3) == 0) {
        float[] dW = new float[tokens * k];
        for (int i = 0; i < dW.length; i++) dW[i] = (float) rnd.nextGaussian();
        float[] gJ = new float[tokens * e], gC = new float[tokens * e];
        if (type == LogitsType.FP32) {
          java.backward(f32, tokens, idxC, dW, gJ);
          cpu.backward(f32, tokens, idxC, dW, gC);
        } else {
          java.backward(half, type, tokens, idxC, dW, gJ);
          cpu.backward(half, type, tokens, idxC, dW, gC);
        }
        assertWeights(where + ": grad logits", gJ, gC);
      }
    }
  }

  static RouterConfig randomConfig(SplittableRandom rnd) {
    int e;
    switch (rnd.nextInt(4)) {
      case 0: e = 1 + rnd.nextInt(16); break;
      case 1: e = 1 + rnd.nextInt(300); break;
      case 2: e = new int[] {64, 96, 128, 160, 256, 384, 512}[rnd.nextInt(7)]; break;
      default: e = 1 + rnd.nextInt(1100); break;
    }
    int k = rnd.nextInt(5) == 0 ? Math.min(e, RouterConfig.MAX_TOP_K) : 1 + rnd.nextInt(Math.min(e, 12));
    RouterConfig.Builder b = RouterConfig.builder(e, k);
    boolean sigmoid = rnd.nextBoolean();
    if (sigmoid) {
      b.scoreFunction(ScoreFunction.SIGMOID);
      if (rnd.nextBoolean()) b.expertBias(randomBias(rnd, e));
    } else if (rnd.nextInt(3) == 0) {
      b.preSoftmax(true);
    }
    if (rnd.nextInt(3) == 0) b.scale(0.5f + (float) rnd.nextDouble() * 3);
    if (rnd.nextBoolean()) {
      // A valid grouping: G divides E, Gk divides k, k/Gk fits in a group.
      for (int attempt = 0; attempt < 8; attempt++) {
        int g = 1 + rnd.nextInt(Math.min(e, RouterConfig.MAX_GROUPS));
        if (e % g != 0) continue;
        int gk = 1 + rnd.nextInt(g);
        if (k % gk != 0 || k / gk > e / g) continue;
        b.groups(g, gk);
        break;
      }
    }
    return b.build();
  }

  static int randomTokens(SplittableRandom rnd, int experts) {
    switch (rnd.nextInt(5)) {
      case 0: return 0;
      case 1: return 1;
      default: return 1 + rnd.nextInt(Math.max(2, 2000 / experts + 3));
    }
  }

  static float[] randomBias(SplittableRandom rnd, int e) {
    float[] b = new float[e];
    for (int i = 0; i < e; i++) b[i] = (float) (rnd.nextGaussian() * 0.1);
    return b;
  }

  /** mode 0: few distinct values (exact ties everywhere); 1: NaN/Inf sprinkled; else Gaussian. */
  static void fillLogits(SplittableRandom rnd, float[] f32, short[] half, LogitsType type, int mode) {
    for (int i = 0; i < f32.length; i++) {
      // Multiples of 2^-6 below 16 in magnitude are exact in fp32, bf16 (ties mode) and fp16.
      float v = mode == 0 ? (rnd.nextInt(5) - 2) * 0.5f
          : type == LogitsType.FP32 ? (float) (rnd.nextGaussian() * 2)
          : Math.max(-15.9f, Math.min(15.9f, Math.round(rnd.nextGaussian() * 2 * 64) / 64f));
      if (mode == 1 && rnd.nextInt(7) == 0)
        v = new float[] {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY}[rnd.nextInt(3)];
      f32[i] = v;
      half[i] = type == LogitsType.FP16 ? exactF16(v) : (short) (Float.floatToRawIntBits(v) >>> 16);
      if (type == LogitsType.BF16 && mode != 0 && mode != 1) f32[i] = Float.intBitsToFloat(half[i] << 16);
    }
  }

  /** fp16 bits of a value that fp16 represents exactly as a normal number (or 0, +-inf, NaN). */
  static short exactF16(float v) {
    if (Float.isNaN(v)) return (short) 0x7E00;
    int bits = Float.floatToRawIntBits(v);
    int sign = (bits >>> 16) & 0x8000;
    if (Float.isInfinite(v)) return (short) (sign | 0x7C00);
    if (v == 0f) return (short) sign;
    int exp = ((bits >>> 23) & 0xFF) - 127 + 15;
    if (exp <= 0 || exp >= 31 || (bits & 0x1FFF) != 0) throw new IllegalArgumentException("not exact in fp16: " + v);
    return (short) (sign | exp << 10 | (bits & 0x7FFFFF) >>> 13);
  }

  static byte[] randomMask(SplittableRandom rnd, int tokens) {
    byte[] m = new byte[tokens];
    for (int i = 0; i < tokens; i++) m[i] = (byte) rnd.nextInt(2);
    return m;
  }

  static void assertWeights(String where, float[] expected, float[] actual) {
    for (int i = 0; i < expected.length; i++) {
      float a = expected[i], b = actual[i];
      if (Float.isNaN(a) && Float.isNaN(b)) continue;
      if (!(Math.abs(a - b) <= 1e-6 * Math.abs(a) + 1e-30 || a == b))
        fail(where + ": element " + i + ": java " + a + " vs native " + b);
    }
  }

  static void assertRowsValid(String where, int[] idx, int tokens, int k, int e) {
    for (int t = 0; t < tokens; t++) {
      boolean[] seen = new boolean[e];
      for (int j = 0; j < k; j++) {
        int x = idx[t * k + j];
        if (x < 0 || x >= e || seen[x]) fail(where + ": row " + t + " has invalid/duplicate expert " + x);
        seen[x] = true;
      }
    }
  }

  static int firstDiff(int[] a, int[] b) {
    for (int i = 0; i < a.length; i++) if (a[i] != b[i]) return i;
    return -1;
  }
}
