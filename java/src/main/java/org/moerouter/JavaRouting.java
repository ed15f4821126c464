// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * Per-token routing math of the pure-Java backend: a line-for-line mirror of
 * native/include/moe_routing_math.h. Every float operation happens in the same order as there, so
 * routing scores are bit-identical to the native backends and indices match exactly.
 */
final class JavaRouting {
  private JavaRouting() {}

  static final int SUM_LANES = 32;
  static final float SIGMOID_NORM_EPS = 1e-20f;
  static final int REPLAY_OK = 0;
  static final int REPLAY_OUT_OF_RANGE = 1;
  static final int REPLAY_DUPLICATE = 2;

  static float bf16ToFloat(short h) {
    return Float.intBitsToFloat((h & 0xffff) << 16);
  }

  /** IEEE binary16 to binary32, exact. */
  static float f16ToFloat(short h) {
    int sign = (h & 0x8000) << 16;
    int exp = (h >>> 10) & 0x1f;
    int man = h & 0x3ff;
    if (exp == 0x1f) return Float.intBitsToFloat(sign | 0x7f800000 | (man << 13));
    if (exp != 0) return Float.intBitsToFloat(sign | ((exp + 112) << 23) | (man << 13));
    if (man == 0) return Float.intBitsToFloat(sign);
    int e = -1;
    do {
      man <<= 1;
      ++e;
    } while ((man & 0x400) == 0);
    return Float.intBitsToFloat(sign | ((112 - e) << 23) | ((man & 0x3ff) << 13));
  }

  static float halfToFloat(short h, LogitsType type) {
    return type == LogitsType.BF16 ? bf16ToFloat(h) : f16ToFloat(h);
  }

  /** exp(x) with the exact operation sequence of exp_det in moe_routing_math.h. */
  static float expDet(float x) {
    if (x != x) return x;
    if (x > 88.72283935546875f) return Float.POSITIVE_INFINITY;
    if (x < -103.97208404541015625f) return 0.0f;
    float n = (float) Math.floor(x * 1.44269502162933349609375f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * z + r + 1.0f;
    int ni = (int) n;
    int n1 = ni / 2;
    int n2 = ni - n1;
    y = y * Float.intBitsToFloat((n1 + 127) << 23);
    return y * Float.intBitsToFloat((n2 + 127) << 23);
  }

  static float sigmoidDet(float x) {
    return 1.0f / (1.0f + expDet(-x));
  }

  /** sqrt_rn: correctly rounded (the double square root of a float rounds to the float one exactly). */
  static float sqrtRn(float x) {
    return (float) Math.sqrt((double) x);
  }

  /** log_det: log(x) for finite x >= 1, the Cephes logf of moe_routing_math.h op for op. */
  static float logDet(float x) {
    int b = Float.floatToRawIntBits(x);
    int e = ((b >>> 23) & 0xff) - 126;
    float m = Float.intBitsToFloat((b & 0x007fffff) | 0x3f000000);
    boolean low = m < 0.707106781186547524f;
    e = e - (low ? 1 : 0);
    m = low ? (m + m) - 1.0f : m - 1.0f;
    float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m;
    y = y * z;
    float fe = (float) e;
    y = y + fe * -2.12194440e-4f;
    y = y - 0.5f * z;
    float r = m + y;
    return r + fe * 0.693359375f;
  }

  /** log1p_det: log(1 + y) for y >= 0 with the rounding error of 1 + y added back. */
  static float log1pDet(float y) {
    float u = 1.0f + y;
    float r = logDet(u) + (y - (u - 1.0f)) / u;
    return y == Float.POSITIVE_INFINITY ? y : r;
  }

  static float softplusDet(float x) {
    float s = log1pDet(expDet(x));
    return x > 20.0f ? x : s;
  }

  static float sqrtsoftplusDet(float x) {
    return sqrtRn(softplusDet(x));
  }

  /** score_of: S of a sigmoid or sqrtsoftplus router. */
  static float scoreOf(boolean sqrtsoftplus, float l) {
    return sqrtsoftplus ? sqrtsoftplusDet(l) : sigmoidDet(l);
  }

  /** score_grad: dS/dL given s = scoreOf(l). */
  static float scoreGrad(boolean sqrtsoftplus, float l, float s) {
    if (sqrtsoftplus) {
      float d = l > 20.0f ? 1.0f : sigmoidDet(l);
      return d / (2.0f * s + SIGMOID_NORM_EPS);
    }
    return s * (1.0f - s);
  }

  /** Unsigned 32-bit order key of a score (NaN lowest, -0 == +0), as a non-negative long. */
  static long scoreKey(float r) {
    if (r != r) return 0L;
    int b = Float.floatToRawIntBits(r + 0.0f);
    int k = (b & 0x80000000) != 0 ? ~b : (b | 0x80000000);
    return k & 0xffffffffL;
  }

  /** Score key plus index, larger = better; equal scores rank the lower index first. */
  static long rankKey(float r, int index) {
    return (scoreKey(r) << 31) | (0x7fffffffL - index);
  }

  static int rankKeyIndex(long key) {
    return (int) (0x7fffffffL - (key & 0x7fffffffL));
  }

  /** Inserts into keys[0..count) kept sorted descending, at most cap entries; returns the new count. */
  static int topkInsert(long[] keys, int offset, int count, int cap, long key) {
    if (count == cap) {
      if (key <= keys[offset + cap - 1]) return count;
      --count;
    }
    int pos = count;
    while (pos > 0 && keys[offset + pos - 1] < key) {
      keys[offset + pos] = keys[offset + pos - 1];
      --pos;
    }
    keys[offset + pos] = key;
    return count + 1;
  }

  static boolean isFinite(float x) {
    return (Float.floatToRawIntBits(x) & 0x7f800000) != 0x7f800000;
  }

  /** check_replay_row: k distinct experts in [0, E). */
  static int checkReplayRow(int[] idx, int offset, int k, int experts) {
    for (int j = 0; j < k; ++j) {
      int e = idx[offset + j];
      if (e < 0 || e >= experts) return REPLAY_OUT_OF_RANGE;
      for (int m = 0; m < j; ++m) if (idx[offset + m] == e) return REPLAY_DUPLICATE;
    }
    return REPLAY_OK;
  }

  /** is_minus_one_row: k times -1 (a padding row of slime/miles traces). */
  static boolean isMinusOneRow(int[] idx, int offset, int k) {
    for (int j = 0; j < k; ++j) if (idx[offset + j] != -1) return false;
    return true;
  }

  /** nonfinite_error's text (moe_api.cpp). */
  static String nonfiniteMessage(long row, int expert, float l) {
    String what = l != l ? "NaN" : l > 0f ? "+inf" : "-inf";
    return "row " + row + ": the logit of expert " + expert + " is " + what + " (non-finite policy ERROR)";
  }

  /** The native error text for a bad row (replay_error), so every backend reports the same message. */
  static String replayRowMessage(long row, int[] idx, int offset, int k, int experts) {
    String why = "";
    boolean outOfRange = checkReplayRow(idx, offset, k, experts) == REPLAY_OUT_OF_RANGE;
    if (outOfRange && idx[offset] == -1 && isMinusOneRow(idx, offset, k))
      why = " (a padding row of -1: rejected by minus-one rows REJECT; LIVE or ARANGE accept it)";
    else if (outOfRange)
      for (int j = 0; j < k; ++j) if (idx[offset + j] == -1) why = " (a row mixing -1 and experts is always rejected)";
    for (int j = 0; j < k; ++j) {
      int e = idx[offset + j];
      if (e < 0 || e >= experts)
        return "row " + row + ": expert " + e + " at position " + j + " is out of range [0, " + experts + ")" + why;
      for (int m = 0; m < j; ++m)
        if (idx[offset + m] == e)
          return "row " + row + ": expert " + e + " appears twice (positions " + m + " and " + j + ")";
    }
    return "row " + row + ": invalid expert indices";
  }

  /** Routing parameters and per-thread scratch for one router. */
  static final class Kernel {
    final int experts, k, groups, groupTopK, groupTerms;
    final boolean sigmoid, sqrtsoftplus, preSoftmax, postSoftmax, grouped, normalize;
    final NonFinitePolicy nonFinite;
    final MinusOneRows minusOneRows;
    final float scale;
    float[] bias;
    // scratch
    final float[] scores;
    final long[] rankKeys;
    final long[] keys;
    final long[] kept;
    final float[] du = new float[RouterConfig.MAX_TOP_K];
    final float[] pj = new float[RouterConfig.MAX_TOP_K];
    final float[] lanes = new float[SUM_LANES];
    float rowMax, rowSum;

    Kernel(RouterConfig c) {
      experts = c.experts();
      k = c.topK();
      sigmoid = c.scoreFunction() == ScoreFunction.SIGMOID;
      sqrtsoftplus = c.scoreFunction() == ScoreFunction.SQRTSOFTPLUS;
      preSoftmax = c.scoreFunction() == ScoreFunction.SOFTMAX && c.preSoftmax();
      postSoftmax = c.scoreFunction() == ScoreFunction.SOFTMAX && !c.preSoftmax();
      normalize = k > 1 && !postSoftmax && c.normalize();
      grouped = c.grouped();
      groups = grouped ? c.groups() : 1;
      groupTopK = grouped ? c.groupTopK() : 1;
      groupTerms = c.groupScore() == GroupScore.TOP2_SUM ? 2 : c.groupScore() == GroupScore.MAX ? 1 : k / groupTopK;
      nonFinite = c.nonFinite();
      minusOneRows = c.minusOneRows();
      scale = c.scale();
      bias = c.expertBiasUnsafe();
      scores = new float[experts];
      rankKeys = new long[experts];
      keys = new long[RouterConfig.MAX_TOP_K + RouterConfig.MAX_GROUPS];
      kept = new long[RouterConfig.MAX_GROUPS];
    }

    boolean needsFullRow() {
      return preSoftmax;
    }

    /** row_softmax: max and the canonical 32-lane denominator. */
    void rowSoftmax(float[] row) {
      float m = Float.NEGATIVE_INFINITY;
      for (int i = 0; i < experts; ++i) {
        float v = row[i];
        if (v > m) m = v;
      }
      for (int j = 0; j < SUM_LANES; ++j) lanes[j] = 0.0f;
      for (int i = 0; i < experts; ++i) lanes[i % SUM_LANES] += expDet(row[i] - m);
      for (int off = SUM_LANES / 2; off > 0; off >>= 1)
        for (int j = 0; j < off; ++j) lanes[j] = lanes[j] + lanes[j + off];
      rowMax = m;
      rowSum = lanes[0];
    }

    /** routing_score: R of one expert (group scores; the ranking key with a bias). */
    float routingScore(float logit, int expert) {
      if (postSoftmax) return logit;
      float s = preSoftmax ? expDet(logit - rowMax) / rowSum : scoreOf(sqrtsoftplus, logit);
      return bias != null ? s + bias[expert] : s;
    }

    /**
     * The reference selection (spec section 2) into idx[off..off+k); returns whether a logit is
     * non-finite. Experts are ranked by K (R with a bias, else the logit); a group is scored by the sum of
     * its top groupTerms routing scores R in descending order; equal keys rank the lower index first.
     */
    boolean selectRow(float[] row, int[] idx, int off) {
      boolean nonfinite = false;
      final boolean byLogit = bias == null;
      for (int i = 0; i < experts; ++i) {
        float l = row[i];
        if (!isFinite(l)) nonfinite = true;
        scores[i] = routingScore(l, i);
        rankKeys[i] = rankKey(byLogit ? l : scores[i], i);
      }
      int count = 0;
      if (!grouped) {
        for (int i = 0; i < experts; ++i) count = topkInsert(keys, 0, count, k, rankKeys[i]);
      } else {
        final int gs = experts / groups, n = groupTerms;
        int gcount = 0;
        for (int g = 0; g < groups; ++g) {
          int c = 0;
          for (int i = g * gs; i < (g + 1) * gs; ++i) c = topkInsert(keys, 0, c, n, rankKey(scores[i], i));
          float s = 0.0f;
          for (int j = 0; j < n; ++j) s = s + scores[rankKeyIndex(keys[j])];
          gcount = topkInsert(keys, n, gcount, groupTopK, rankKey(s, g));
        }
        System.arraycopy(keys, n, kept, 0, gcount);
        for (int j = 0; j < gcount; ++j) {
          int g = rankKeyIndex(kept[j]);
          for (int i = g * gs; i < (g + 1) * gs; ++i) count = topkInsert(keys, 0, count, k, rankKeys[i]);
        }
      }
      for (int j = 0; j < k; ++j) idx[off + j] = rankKeyIndex(keys[j]);
      return nonfinite;
    }

    /** unscaled_weights into w[0..k); returns whether a logit read (k of them) is non-finite. */
    boolean unscaledWeights(float[] row, int[] idx, int off, float[] w) {
      boolean nonfinite = false;
      if (postSoftmax) {
        float m = Float.NEGATIVE_INFINITY;
        for (int j = 0; j < k; ++j) {
          float l = row[idx[off + j]];
          if (!isFinite(l)) nonfinite = true;
          if (l > m) m = l;
        }
        float sum = 0.0f;
        for (int j = 0; j < k; ++j) {
          w[j] = expDet(row[idx[off + j]] - m);
          sum = sum + w[j];
        }
        for (int j = 0; j < k; ++j) w[j] = w[j] / sum;
        return nonfinite;
      }
      float denom = 0.0f;
      for (int j = 0; j < k; ++j) {
        float l = row[idx[off + j]];
        if (preSoftmax) {
          w[j] = expDet(l - rowMax) / rowSum;
        } else {
          if (!isFinite(l)) nonfinite = true;
          w[j] = scoreOf(sqrtsoftplus, l);
        }
        denom = denom + w[j];
      }
      if (normalize) {
        denom = denom + SIGMOID_NORM_EPS;
        for (int j = 0; j < k; ++j) w[j] = w[j] / denom;
      }
      return nonfinite;
    }

    boolean rowHasNonfinite(float[] row) {
      for (int i = 0; i < experts; ++i) if (!isFinite(row[i])) return true;
      return false;
    }

    /** backward_row: grad[0..E) from dw[dwOff..dwOff+k) at idx[off..off+k); w = unscaled weights. */
    void backwardRow(float[] row, int[] idx, int off, float[] w, float[] dw, int dwOff, float[] grad) {
      if (postSoftmax) {
        for (int i = 0; i < experts; ++i) grad[i] = 0.0f;
        float dot = 0.0f;
        for (int j = 0; j < k; ++j) dot = dot + w[j] * (scale * dw[dwOff + j]);
        for (int j = 0; j < k; ++j) grad[idx[off + j]] = w[j] * (scale * dw[dwOff + j] - dot);
        return;
      }
      if (normalize) {
        float z = 0.0f, dot = 0.0f;
        for (int j = 0; j < k; ++j) {
          float l = row[idx[off + j]];
          z = z + (preSoftmax ? expDet(l - rowMax) / rowSum : scoreOf(sqrtsoftplus, l));
        }
        z = z + SIGMOID_NORM_EPS;
        for (int j = 0; j < k; ++j) dot = dot + (scale * dw[dwOff + j]) * w[j];
        for (int j = 0; j < k; ++j) du[j] = (scale * dw[dwOff + j] - dot) / z;
      } else {
        for (int j = 0; j < k; ++j) du[j] = scale * dw[dwOff + j];
      }
      if (preSoftmax) {
        float dot = 0.0f;
        for (int j = 0; j < k; ++j) {
          pj[j] = normalize ? expDet(row[idx[off + j]] - rowMax) / rowSum : w[j];
          dot = dot + pj[j] * du[j];
        }
        for (int i = 0; i < experts; ++i) grad[i] = -(expDet(row[i] - rowMax) / rowSum) * dot;
        for (int j = 0; j < k; ++j) grad[idx[off + j]] = pj[j] * (du[j] - dot);
        return;
      }
      for (int i = 0; i < experts; ++i) grad[i] = 0.0f;
      for (int j = 0; j < k; ++j) {
        float l = row[idx[off + j]];
        grad[idx[off + j]] = du[j] * scoreGrad(sqrtsoftplus, l, scoreOf(sqrtsoftplus, l));
      }
    }

    /** aux_scores_row: softmax over the row, or S normalised by the canonical lane sum. */
    void auxScoresRow(float[] row, float[] out) {
      if (!sigmoid && !sqrtsoftplus) {
        rowSoftmax(row);
        for (int i = 0; i < experts; ++i) out[i] = expDet(row[i] - rowMax) / rowSum;
        return;
      }
      for (int j = 0; j < SUM_LANES; ++j) lanes[j] = 0.0f;
      for (int i = 0; i < experts; ++i) {
        out[i] = scoreOf(sqrtsoftplus, row[i]);
        lanes[i % SUM_LANES] += out[i];
      }
      float z = foldLanes() + SIGMOID_NORM_EPS;
      for (int i = 0; i < experts; ++i) out[i] = out[i] / z;
    }

    /** aux_grad_row: c * d(sum_i f_i S_i)/dL added into grad[gradOff..gradOff+E). */
    void auxGradRow(float[] row, float[] auxScores, float[] f, float c, float[] grad, int gradOff) {
      float dot = 0.0f;
      for (int i = 0; i < experts; ++i) dot = dot + f[i] * auxScores[i];
      if (!sigmoid && !sqrtsoftplus) {
        for (int i = 0; i < experts; ++i) grad[gradOff + i] = grad[gradOff + i] + c * (auxScores[i] * (f[i] - dot));
        return;
      }
      for (int j = 0; j < SUM_LANES; ++j) lanes[j] = 0.0f;
      for (int i = 0; i < experts; ++i) lanes[i % SUM_LANES] += scoreOf(sqrtsoftplus, row[i]);
      float z = foldLanes() + SIGMOID_NORM_EPS;
      for (int i = 0; i < experts; ++i) {
        float l = row[i];
        grad[gradOff + i] = grad[gradOff + i] + c * (scoreGrad(sqrtsoftplus, l, scoreOf(sqrtsoftplus, l)) / z * (f[i] - dot));
      }
    }

    private float foldLanes() {
      for (int off = SUM_LANES / 2; off > 0; off >>= 1)
        for (int j = 0; j < off; ++j) lanes[j] = lanes[j] + lanes[j + off];
      return lanes[0];
    }
  }
}
