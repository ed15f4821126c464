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
 * configurations and shapes (T = 0 and 1, E not a power of two, k = 1 and k = E, every score function,
 * with and without bias, the normalize switch, every group rule with k not a multiple of Gk, every
 * non-finite policy and -1 replay rows under every policy; bf16/fp16 inputs with exact ties, NaN and
 * infinite logits, saturated logits). Indices, weights, gradients and non-finite row flags must be
 * bit-identical, rejections identical (status and message) with nothing written.
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
      int mode = rnd.nextInt(7);  // 0 ties, 1 non-finite, 2 saturated, else plain
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
        RouterConfig.builder(e, 6).scoreFunction(ScoreFunction.SIGMOID).expertBias(randomBias(rnd, e)).groups(3, 3).build(),
        // sqrtsoftplus: scores of the row and weights on the AVX2 lanes (k >= 4), and the scalar path
        RouterConfig.builder(e, 3).scoreFunction(ScoreFunction.SQRTSOFTPLUS).build(),
        RouterConfig.builder(e, 5).scoreFunction(ScoreFunction.SQRTSOFTPLUS).expertBias(randomBias(rnd, e)).build(),
        RouterConfig.builder(e, 9).scoreFunction(ScoreFunction.SQRTSOFTPLUS).normalize(false).groups(4, 2)
            .groupScore(GroupScore.TOP2_SUM).build(),
        RouterConfig.builder(e, 8).preSoftmax(true).expertBias(randomBias(rnd, e)).normalize(true).build()}) {
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

  /** The outcome of one call on one backend: its return value, or the exception it threw. */
  static Object outcome(java.util.function.LongSupplier call) {
    try {
      return call.getAsLong();
    } catch (MoeRouterException ex) {
      return ex;
    }
  }

  /** Both backends returned the same value, or threw with the same status and message. */
  static boolean sameOutcome(String where, Object java, Object cpu) {
    if (java instanceof MoeRouterException || cpu instanceof MoeRouterException) {
      if (!(java instanceof MoeRouterException) || !(cpu instanceof MoeRouterException))
        fail(where + ": only one backend rejected the call: java " + describe(java) + ", native " + describe(cpu));
      MoeRouterException a = (MoeRouterException) java, b = (MoeRouterException) cpu;
      assertEquals(a.status(), b.status(), where + ": status");
      assertEquals(a.getMessage(), b.getMessage(), where + ": message");
      return false;
    }
    assertEquals(java, cpu, where + ": non-finite row count");
    return true;
  }

  static String describe(Object o) {
    return o instanceof MoeRouterException ? ((MoeRouterException) o).getMessage() : String.valueOf(o);
  }

  static void compare(RouterConfig config, int tokens, LogitsType type, int mode, SplittableRandom rnd, String where) {
    int e = config.experts();
    int k = config.topK();
    float[] f32 = new float[tokens * e];
    short[] half = new short[tokens * e];
    fillLogits(rnd, f32, half, type, mode);
    boolean fp32 = type == LogitsType.FP32;
    try (MoeRouter java = MoeRouter.create(config, Backend.JAVA);
        MoeRouter cpu = MoeRouter.create(config, Backend.CPU)) {
      int[] idxJ = new int[tokens * k], idxC = new int[tokens * k];
      float[] wJ = new float[tokens * k], wC = new float[tokens * k];
      byte[] rowsJ = new byte[tokens], rowsC = new byte[tokens];
      prefill(idxJ, wJ, rowsJ);
      prefill(idxC, wC, rowsC);
      Object nfJ = outcome(() -> fp32 ? java.route(f32, tokens, idxJ, wJ, rowsJ) : java.route(half, type, tokens, idxJ, wJ, rowsJ));
      Object nfC = outcome(() -> fp32 ? cpu.route(f32, tokens, idxC, wC, rowsC) : cpu.route(half, type, tokens, idxC, wC, rowsC));
      boolean live = sameOutcome(where + ": live", nfJ, nfC);
      if (!live) assertUntouched(where + ": rejected live call", idxC, wC, rowsC);
      if (!Arrays.equals(idxJ, idxC)) fail(where + ": indices differ at " + firstDiff(idxJ, idxC));
      assertBits(where + ": live weights", wJ, wC);
      assertArrayEquals(rowsJ, rowsC, where + ": live non-finite rows");
      if (live) {
        assertRowsValid(where, idxC, tokens, k, e);
        if (config.nonFinite() == NonFinitePolicy.ZERO) assertZeroRows(where + ": live", wC, rowsC, k);
      }
      int[] liveIdx = idxC.clone();
      byte[] liveRows = rowsC.clone();

      // Replay random distinct experts (partial, with a mask; some rows all -1, rarely a mixed one).
      int[] replay = TestData.randomSelection(rnd, tokens, k, e);
      if (rnd.nextInt(3) == 0)
        for (int t = 0; t < tokens; t++) if (rnd.nextInt(4) == 0) Arrays.fill(replay, t * k, t * k + k, -1);
      if (tokens > 0 && k > 1 && rnd.nextInt(20) == 0) replay[rnd.nextInt(tokens) * k + rnd.nextInt(k)] = -1;
      byte[] mask = rnd.nextBoolean() ? null : randomMask(rnd, tokens);
      prefill(idxJ, wJ, rowsJ);
      prefill(idxC, wC, rowsC);
      nfJ = outcome(() -> fp32 ? java.replay(f32, tokens, replay, mask, idxJ, wJ, rowsJ)
          : java.replay(half, type, tokens, replay, mask, idxJ, wJ, rowsJ));
      nfC = outcome(() -> fp32 ? cpu.replay(f32, tokens, replay, mask, idxC, wC, rowsC)
          : cpu.replay(half, type, tokens, replay, mask, idxC, wC, rowsC));
      boolean replayed = sameOutcome(where + ": replay", nfJ, nfC);
      if (!replayed) assertUntouched(where + ": rejected replay", idxC, wC, rowsC);
      if (!Arrays.equals(idxJ, idxC)) fail(where + ": replay indices differ at " + firstDiff(idxJ, idxC));
      assertBits(where + ": replay weights", wJ, wC);
      assertArrayEquals(rowsJ, rowsC, where + ": replay non-finite rows");
      if (replayed) {
        for (int t = 0; t < tokens; t++) {
          if (mask != null && mask[t] == 0) continue;
          boolean pad = replay[t * k] == -1;
          for (int j = 0; j < k; j++) {
            int want = !pad ? replay[t * k + j] : config.minusOneRows() == MinusOneRows.ARANGE ? j : live ? liveIdx[t * k + j] : idxC[t * k + j];
            assertEquals(want, idxC[t * k + j], where + ": row " + t + " (" + (pad ? "-1 row" : "replayed") + ") slot " + j);
          }
        }
        if (config.nonFinite() == NonFinitePolicy.ZERO) assertZeroRows(where + ": replay", wC, rowsC, k);
      }

      if (live && rnd.nextInt(3) == 0) {
        float[] dW = new float[tokens * k];
        for (int i = 0; i < dW.length; i++) dW[i] = (float) rnd.nextGaussian();
        float[] gJ = new float[tokens * e], gC = new float[tokens * e];
        Arrays.fill(gJ, -7f);
        Arrays.fill(gC, -7f);
        Object bJ = outcome(() -> {
          if (fp32) java.backward(f32, tokens, liveIdx, dW, liveRows, gJ);
          else java.backward(half, type, tokens, liveIdx, dW, liveRows, gJ);
          return 0;
        });
        Object bC = outcome(() -> {
          if (fp32) cpu.backward(f32, tokens, liveIdx, dW, liveRows, gC);
          else cpu.backward(half, type, tokens, liveIdx, dW, liveRows, gC);
          return 0;
        });
        if (sameOutcome(where + ": backward", bJ, bC) && config.nonFinite() == NonFinitePolicy.ZERO)
          for (int t = 0; t < tokens; t++)
            for (int i = 0; liveRows[t] != 0 && i < e; i++) assertEquals(0f, gC[t * e + i], where + ": ZERO row " + t + " gradient");
        assertBits(where + ": grad logits", gJ, gC);
      }
    }
  }

  /** Bit-identical floats (every NaN equal to every NaN, as Arrays.equals(float[], float[])). */
  static void assertBits(String where, float[] java, float[] cpu) {
    for (int i = 0; i < java.length; i++)
      if (Float.floatToIntBits(java[i]) != Float.floatToIntBits(cpu[i]))
        fail(where + ": element " + i + ": java " + java[i] + " vs native " + cpu[i] + " (bits "
            + Integer.toHexString(Float.floatToRawIntBits(java[i])) + " vs " + Integer.toHexString(Float.floatToRawIntBits(cpu[i])) + ")");
  }

  static void prefill(int[] idx, float[] w, byte[] rows) {
    Arrays.fill(idx, -7);
    Arrays.fill(w, -7f);
    Arrays.fill(rows, (byte) 7);
  }

  /** A rejected call wrote nothing: every output still holds prefill()'s values. */
  static void assertUntouched(String where, int[] idx, float[] w, byte[] rows) {
    for (int i = 0; i < idx.length; i++)
      if (idx[i] != -7 || w[i] != -7f) fail(where + " wrote output element " + i);
    for (int t = 0; t < rows.length; t++) if (rows[t] != 7) fail(where + " wrote row flag " + t);
  }

  /** Non-finite policy ZERO: flagged rows have weights 0 (and only they are forced to 0). */
  static void assertZeroRows(String where, float[] w, byte[] rows, int k) {
    for (int t = 0; t < rows.length; t++)
      for (int j = 0; rows[t] != 0 && j < k; j++) assertEquals(0f, w[t * k + j], where + ": ZERO row " + t + " weight " + j);
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
    ScoreFunction score = ScoreFunction.values()[rnd.nextInt(3)];
    b.scoreFunction(score);
    boolean pre = score == ScoreFunction.SOFTMAX && rnd.nextInt(3) == 0;
    b.preSoftmax(pre);
    if ((score != ScoreFunction.SOFTMAX || pre) && rnd.nextBoolean()) b.expertBias(randomBias(rnd, e));
    if ((score != ScoreFunction.SOFTMAX || pre) && rnd.nextInt(3) == 0) b.normalize(rnd.nextBoolean());
    if (rnd.nextInt(3) == 0) b.scale(0.5f + (float) rnd.nextDouble() * 3);
    if (rnd.nextBoolean()) {
      // A valid grouping: G divides E, the kept groups hold k experts, the group rule fits.
      for (int attempt = 0; attempt < 8; attempt++) {
        int g = 1 + rnd.nextInt(Math.min(e, RouterConfig.MAX_GROUPS));
        if (e % g != 0) continue;
        int gk = 1 + rnd.nextInt(g);
        if (gk * (e / g) < k) continue;
        GroupScore rule = GroupScore.values()[rnd.nextInt(3)];
        if (rule == GroupScore.TOPK_SUM && k / gk < 1) continue;
        if (rule == GroupScore.TOP2_SUM && e / g < 2) continue;
        b.groups(g, gk).groupScore(rule);
        break;
      }
    }
    int policy = rnd.nextInt(6);  // mostly PROPAGATE, as in use
    b.nonFinite(policy < 4 ? NonFinitePolicy.PROPAGATE : policy == 4 ? NonFinitePolicy.ZERO : NonFinitePolicy.ERROR);
    b.minusOneRows(MinusOneRows.values()[rnd.nextInt(3)]);
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

  /**
   * mode 0: few distinct values (exact ties everywhere); 1: NaN/Inf sprinkled; 2: saturated, |L| in
   * [16, 48] where float32 sigmoid is 1 or tiny and sqrtsoftplus takes its x > 20 branch; else Gaussian.
   */
  static void fillLogits(SplittableRandom rnd, float[] f32, short[] half, LogitsType type, int mode) {
    for (int i = 0; i < f32.length; i++) {
      // Multiples of 2^-6 below 16 in magnitude are exact in fp32, bf16 (ties mode) and fp16; the
      // saturated values are multiples of 1/4 below 64, exact in all three too.
      float v = mode == 0 ? (rnd.nextInt(5) - 2) * 0.5f
          : mode == 2 ? (rnd.nextBoolean() ? 1 : -1) * (16 + rnd.nextInt(129) / 4f)
          : type == LogitsType.FP32 ? (float) (rnd.nextGaussian() * 2)
          : Math.max(-15.9f, Math.min(15.9f, Math.round(rnd.nextGaussian() * 2 * 64) / 64f));
      if (mode == 1 && rnd.nextInt(7) == 0)
        v = new float[] {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY}[rnd.nextInt(3)];
      f32[i] = v;
      half[i] = type == LogitsType.FP16 ? exactF16(v) : (short) (Float.floatToRawIntBits(v) >>> 16);
      if (type == LogitsType.BF16 && mode > 2) f32[i] = Float.intBitsToFloat(half[i] << 16);
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

  /** Within 1e-6 relative (the training extras, whose sums are not all mirrored op for op). */
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
