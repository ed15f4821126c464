// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * The native live softmax-post selection (docs/cpu-design.md, "Live softmax post") against the pure-Java
 * reference, bit for bit, on the rows that decide its paths: the AVX-512 kernel (E a multiple of 16, k <= 8)
 * selects on the float logits, bounds the k-th largest by the k-th of 16 lane maxima, compresses the logits at
 * or above that bound and sorts at most 16 of them as 64-bit rank keys; more candidates go to the AVX2
 * selection (up to 64) and then to the general path, and so do rows with a non-finite logit or whose float sum
 * overflows. So the rows here put ties at the cut in different vectors of the row (1 to 80 copies of the k-th
 * value: 8 or fewer candidates, 9 to 16, 17 to 64, more), -0 and +0 tied at the cut in either order, rows of a
 * few distinct values, NaN and infinities, huge finite rows, subnormals, every dtype, E from 16 to 512 and k
 * from 1 to 8 (and E not a multiple of 16, and k above 8, which take the other kernels), T with a tail after
 * the blocks of 16, on every instruction-set level this CPU has.
 */
@ExtendWith(CpuIsaCap.class)
class LiveSoftmaxPostSelectTest {
  static final int[] EXPERTS = {16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 256, 384, 512, 24, 40, 136};
  static final int KINDS = 8;

  @Test
  void everyPathAgreesWithJavaOnEveryLevel() {
    final int top = CpuIsaCap.top();
    for (int level = top; level >= Math.min(top, 1); level--) {
      CpuIsaCap.use(level);
      SplittableRandom rnd = new SplittableRandom(20261130L + level);
      for (int e : EXPERTS)
        for (int k = 1; k <= 10; k++) {
          if (k > 8 && e % 16 == 0 && e != 128) continue;  // k > 8: the other kernel, a few shapes suffice
          for (LogitsType type : LogitsType.values()) {
            int tokens = 48 + rnd.nextInt(16);  // three blocks of 16 and a tail
            NonFinitePolicy policy = NonFinitePolicy.values()[rnd.nextInt(3)];
            RouterConfig config = RouterConfig.builder(e, k).nonFinite(policy)
                .scale(rnd.nextBoolean() ? 1f : 0.5f + (float) rnd.nextDouble() * 3).build();
            compare(config, tokens, type, rnd, "level " + level + ", " + config + ", T=" + tokens + ", " + type);
          }
        }
    }
  }

  /** -0 and +0 are one selection key: tied at the cut, the lower index wins whichever zero it holds. */
  @Test
  void signedZerosAtTheCutTieByIndex() {
    SplittableRandom rnd = new SplittableRandom(5);
    for (int e : new int[] {16, 64, 128, 512}) {
      int k = 6, tokens = 32;
      float[] l = new float[tokens * e];
      for (int t = 0; t < tokens; t++) {
        for (int i = 0; i < e; i++) l[t * e + i] = -1f - (i % 7);
        // two zeros for the last place (in different 16-lane vectors where E > 16), -0 the lower on even rows
        int lo = rnd.nextInt(16), hi = e > 16 ? 16 * (1 + rnd.nextInt(e / 16 - 1)) + rnd.nextInt(16) : (lo + 1 + rnd.nextInt(15)) % 16;
        l[t * e + Math.min(lo, hi)] = t % 2 == 0 ? -0f : 0f;
        l[t * e + Math.max(lo, hi)] = t % 2 == 0 ? 0f : -0f;
        int[] order = shuffled(rnd, e);
        for (int j = 0, placed = 0; placed < k - 1; j++)
          if (order[j] != lo && order[j] != hi) l[t * e + order[j]] = 5f + placed++;
      }
      RouterConfig c = RouterConfig.builder(e, k).build();
      try (MoeRouter java = MoeRouter.create(c, Backend.JAVA); MoeRouter cpu = MoeRouter.create(c, Backend.CPU)) {
        RoutingResult a = java.route(l, tokens), b = cpu.route(l, tokens);
        for (int t = 0; t < tokens; t++) {
          int zero = -1;
          for (int i = 0; i < e && zero < 0; i++) if (l[t * e + i] == 0f) zero = i;
          assertEquals(zero, a.indices()[t * k + k - 1], "E=" + e + " row " + t + ": the reference takes the lower zero");
        }
        assertArrayEquals(a.indices(), b.indices(), "E=" + e + ": indices");
        BackendEquivalenceTest.assertBits("E=" + e + ": weights", a.weights(), b.weights());
      }
    }
  }

  static void compare(RouterConfig config, int tokens, LogitsType type, SplittableRandom rnd, String where) {
    int e = config.experts(), k = config.topK();
    float[] f32 = new float[tokens * e];
    short[] half = new short[tokens * e];
    for (int t = 0; t < tokens; t++) {
      // Blocks of 16 rows either all on the fast path or mixed, so both weight paths run.
      boolean clean = (t / 16) % 2 == 0;
      int kind = clean ? new int[] {0, 1, 2, 7}[rnd.nextInt(4)] : rnd.nextInt(KINDS);
      fillRow(rnd, f32, t * e, e, k, kind, type);
    }
    for (int i = 0; i < f32.length; i++) {
      float v = f32[i];
      half[i] = type == LogitsType.FP16 ? BackendEquivalenceTest.exactF16(v) : (short) (Float.floatToRawIntBits(v) >>> 16);
    }
    try (MoeRouter java = MoeRouter.create(config, Backend.JAVA); MoeRouter cpu = MoeRouter.create(config, Backend.CPU)) {
      int[] idxJ = new int[tokens * k], idxC = new int[tokens * k];
      float[] wJ = new float[tokens * k], wC = new float[tokens * k];
      byte[] rowsJ = new byte[tokens], rowsC = new byte[tokens];
      BackendEquivalenceTest.prefill(idxJ, wJ, rowsJ);
      BackendEquivalenceTest.prefill(idxC, wC, rowsC);
      boolean fp32 = type == LogitsType.FP32;
      Object nfJ = BackendEquivalenceTest.outcome(
          () -> fp32 ? java.route(f32, tokens, idxJ, wJ, rowsJ) : java.route(half, type, tokens, idxJ, wJ, rowsJ));
      Object nfC = BackendEquivalenceTest.outcome(
          () -> fp32 ? cpu.route(f32, tokens, idxC, wC, rowsC) : cpu.route(half, type, tokens, idxC, wC, rowsC));
      if (!BackendEquivalenceTest.sameOutcome(where, nfJ, nfC)) {
        BackendEquivalenceTest.assertUntouched(where + ": rejected call", idxC, wC, rowsC);
        return;
      }
      if (!Arrays.equals(idxJ, idxC)) {
        int d = BackendEquivalenceTest.firstDiff(idxJ, idxC);
        int t = d / k;
        fail(where + ": indices differ at row " + t + " slot " + d % k + ": java "
            + Arrays.toString(Arrays.copyOfRange(idxJ, t * k, t * k + k)) + " vs native "
            + Arrays.toString(Arrays.copyOfRange(idxC, t * k, t * k + k)));
      }
      BackendEquivalenceTest.assertBits(where + ": weights", wJ, wC);
      assertArrayEquals(rowsJ, rowsC, where + ": non-finite rows");
    }
  }

  /**
   * One row of logits at f[o, o + e) of a kind: 0 distinct-ish values (Gaussian in fp32, a grid of 1/64 in the
   * half types); 1 the k-th value repeated 1..80 times at random places (the k - 1 above it distinct); 2 the
   * same with -0 and +0 as the k-th value; 3 five distinct values; 4 one NaN or infinity; 5 huge finite values
   * (the float sum overflows); 6 every logit the same; 7 subnormals and tiny values (zeros in fp16). Every value
   * is exact in the dtype (fp16: a normal or zero; bf16: the high half of the fp32 bits).
   */
  static void fillRow(SplittableRandom rnd, float[] f, int o, int e, int k, int kind, LogitsType type) {
    boolean fp32 = type == LogitsType.FP32, f16 = type == LogitsType.FP16;
    for (int i = 0; i < e; i++) f[o + i] = gridValue(rnd, fp32);
    switch (kind) {
      case 1:
      case 2: {
        float cut = kind == 2 ? 0f : 2f + rnd.nextInt(8) / 8f;
        for (int i = 0; i < e; i++) f[o + i] = Math.min(f[o + i], cut - 0.25f) - (kind == 2 ? 1f : 0f);
        int[] order = shuffled(rnd, e);
        int copies = 1 + rnd.nextInt(Math.min(80, e - k + 1));
        for (int j = 0; j < k - 1; j++) f[o + order[j]] = 12f + j * 0.5f;
        for (int j = 0; j < copies; j++) f[o + order[k - 1 + j]] = kind == 2 && rnd.nextBoolean() ? -0f : cut;
        break;
      }
      case 3:
        for (int i = 0; i < e; i++) f[o + i] = (rnd.nextInt(5) - 2) * 0.5f;
        break;
      case 4:
        f[o + rnd.nextInt(e)] = new float[] {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY}[rnd.nextInt(3)];
        break;
      case 5: {
        float big = f16 ? 65504f : 3.0e38f;
        for (int i = 0; i < e; i++) if (rnd.nextInt(3) > 0) f[o + i] = rnd.nextBoolean() ? big : f16 ? 32768f : 2.5e38f;
        break;
      }
      case 6: {
        float v = rnd.nextBoolean() ? gridValue(rnd, fp32) : -0f;
        Arrays.fill(f, o, o + e, v);
        break;
      }
      case 7:
        for (int i = 0; i < e; i++) {
          float v = new float[] {Float.MIN_VALUE, -Float.MIN_VALUE, Float.MIN_NORMAL, 1e-40f, -1e-40f, 0f, -0f}[rnd.nextInt(7)];
          f[o + i] = f16 && v != 0f && Math.abs(v) < 6.103515625e-05f ? (v > 0 ? 0f : -0f) : v;
        }
        break;
      default:
        break;
    }
  }

  static float gridValue(SplittableRandom rnd, boolean fp32) {
    return fp32 ? (float) (rnd.nextGaussian() * 2) : (rnd.nextInt(2 * 1000 + 1) - 1000) / 64f;
  }

  static int[] shuffled(SplittableRandom rnd, int n) {
    int[] a = new int[n];
    for (int i = 0; i < n; i++) a[i] = i;
    for (int i = n - 1; i > 0; i--) {
      int j = rnd.nextInt(i + 1), x = a[i];
      a[i] = a[j];
      a[j] = x;
    }
    return a;
  }
}
