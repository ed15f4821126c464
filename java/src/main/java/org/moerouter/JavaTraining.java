// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.util.Arrays;

/**
 * Spec section 6 on the pure-Java backend: valid tokens, counts, the losses and token dropping. A mirror of
 * native/src/moe_cpu_training.cpp and moe_cpu_dropping.cpp: the same work items, the same float operations
 * in the same order and the same double sums merged in the same order, so JAVA and CPU agree bit for bit.
 * Arguments are checked by {@link MoeRouter} first. Every call allocates its own scratch (this is the
 * reference, not the fast path), so calls need no lock.
 */
final class JavaTraining {
  private JavaTraining() {}

  /** Rows per work item of the loss passes (kChunkRows). */
  static final int CHUNK_ROWS = 256;

  private static void loadRow(float[] f32, short[] half, LogitsType type, int t, int e, float[] row) {
    int base = t * e;
    if (f32 != null) System.arraycopy(f32, base, row, 0, e);
    else if (type == LogitsType.BF16) for (int i = 0; i < e; i++) row[i] = JavaRouting.bf16ToFloat(half[base + i]);
    else for (int i = 0; i < e; i++) row[i] = JavaRouting.f16ToFloat(half[base + i]);
  }

  private static boolean finiteRow(float[] row, int e) {
    for (int i = 0; i < e; i++) if (!JavaRouting.isFinite(row[i])) return false;
    return true;
  }

  /** cpu_valid_tokens. */
  static long validTokens(RouterConfig c, float[] f32, short[] half, LogitsType type, int tokens, byte[] padding,
      byte[] out) {
    final int e = c.experts();
    final boolean zero = c.nonFinite() == NonFinitePolicy.ZERO;
    float[] row = zero ? new float[e] : null;
    long n = 0;
    for (int t = 0; t < tokens; t++) {
      boolean v = !(padding != null && padding[t] != 0);
      if (v && zero) {
        loadRow(f32, half, type, t, e, row);
        v = finiteRow(row, e);
      }
      out[t] = (byte) (v ? 1 : 0);
      if (v) n++;
    }
    return n;
  }

  /** cpu_tokens_per_expert: counts of idx [tokens, k], or column sums of map [tokens, E], over the valid rows. */
  static void countTokens(int[] idx, byte[] map, byte[] valid, int tokens, int k, int e, int[] counts) {
    Arrays.fill(counts, 0, e, 0);
    for (int t = 0; t < tokens; t++) {
      if (valid != null && valid[t] == 0) continue;
      if (idx != null) for (int j = 0; j < k; j++) counts[idx[t * k + j]]++;
      else for (int i = 0; i < e; i++) if (map[t * e + i] != 0) counts[i]++;
    }
  }

  /** cpu_losses: values into {@code out}, c into out.auxTokensPerExpert(), the gradient ADDED to grad. */
  static void losses(RouterConfig rc, float[] f32, short[] half, LogitsType type, int tokens, byte[] valid,
      LossConfig c, double[] globalTokens, double globalNumTokens, LossValues out, float[] outScores, byte[] outMap,
      float[] grad) {
    final int e = rc.experts(), k = rc.topK();
    final JavaRouting.Kernel kernel = new JavaRouting.Kernel(rc);
    final boolean zero = rc.nonFinite() == NonFinitePolicy.ZERO;
    final boolean aux = c.auxCoeff() != 0f, seq = c.seqAuxCoeff() != 0f, glob = c.globalAuxCoeff() != 0f;
    final boolean z = c.zCoeff() != 0f;
    final boolean stats = true;  // the Java API always returns c (LossValues.auxTokensPerExpert)
    final long batch = seq ? tokens / c.seqLength() : 1;
    final long seqLen = seq ? c.seqLength() : tokens;
    final boolean bs = !seq || c.seqLayout() == SeqLayout.BS;
    final long seqChunks = (seqLen + CHUNK_ROWS - 1) / CHUNK_ROWS;
    final int items = (int) (batch * seqChunks);
    final int B = (int) batch;
    double[] sums = new double[items * e];
    long[] counts = new long[items * e];
    double[] zs = new double[items];
    long[] ns = new long[items];
    float[] row = new float[e];
    float[] scores = new float[e];
    long[] keys = new long[k];
    for (int w = 0; w < items; w++) {
      final long b = w / seqChunks, s0 = (w % seqChunks) * CHUNK_ROWS, s1 = Math.min(seqLen, s0 + CHUNK_ROWS);
      double zsum = 0.0;
      long n = 0;
      for (long s = s0; s < s1; s++) {
        final int t = (int) (bs ? b * seqLen + s : s * batch + b);
        loadRow(f32, half, type, t, e, row);
        if ((valid != null && valid[t] == 0) || (zero && !finiteRow(row, e))) {
          if (outScores != null) Arrays.fill(outScores, t * e, (t + 1) * e, 0f);
          if (outMap != null) Arrays.fill(outMap, t * e, (t + 1) * e, (byte) 0);
          continue;
        }
        n++;
        if (stats) {
          kernel.auxScoresRow(row, scores);
          int count = 0;
          for (int i = 0; i < e; i++) {
            sums[w * e + i] += scores[i];
            count = JavaRouting.topkInsert(keys, 0, count, k, JavaRouting.rankKey(row[i], i));
          }
          for (int j = 0; j < k; j++) counts[w * e + JavaRouting.rankKeyIndex(keys[j])]++;
          if (outScores != null) System.arraycopy(scores, 0, outScores, t * e, e);
          if (outMap != null) {
            Arrays.fill(outMap, t * e, (t + 1) * e, (byte) 0);
            for (int j = 0; j < k; j++) outMap[t * e + JavaRouting.rankKeyIndex(keys[j])] = 1;
          }
        }
        if (z) {
          kernel.rowSoftmax(row);
          float lse = lse(kernel);
          zsum += (double) lse * (double) lse;
        }
      }
      zs[w] = zsum;
      ns[w] = n;
    }

    long n = 0;
    double zsum = 0.0;
    double[] p = new double[e];
    long[] cn = new long[e];
    double[] pb = seq ? new double[B * e] : null;
    long[] cb = seq ? new long[B * e] : null;
    for (int w = 0; w < items; w++) {
      n += ns[w];
      zsum += zs[w];
      int b = (int) (w / seqChunks);
      for (int i = 0; i < e; i++) {
        p[i] += sums[w * e + i];
        cn[i] += counts[w * e + i];
        if (seq) {
          pb[b * e + i] += sums[w * e + i];
          cb[b * e + i] += counts[w * e + i];
        }
      }
    }
    int[] outCounts = out.auxTokensPerExpert();
    for (int i = 0; i < e; i++) outCounts[i] = (int) cn[i];
    out.auxLoss = out.seqAuxLoss = out.globalAuxLoss = out.zLoss = 0;
    out.validTokens = n;
    double aAux = 0.0, aSeq = 0.0, aGlob = 0.0;
    if (n > 0) {
      final double nn = (double) n;
      if (aux) {
        double dot = 0.0;
        for (int i = 0; i < e; i++) dot += (double) cn[i] * p[i];
        aAux = (double) c.auxCoeff() * e / ((double) k * nn * nn);
        out.auxLoss = aAux * dot;
      }
      if (seq) {
        final double nq = nn / (double) B;
        double dot = 0.0;
        for (int j = 0; j < B * e; j++) dot += (double) cb[j] * pb[j];
        aSeq = (double) c.seqAuxCoeff() * e / ((double) k * nq * nq * (double) B);
        out.seqAuxLoss = aSeq * dot;
      }
      if (glob && globalNumTokens > 0.0) {
        final double ng = globalNumTokens;
        double dot = 0.0;
        for (int i = 0; i < e; i++) dot += globalTokens[i] * p[i];
        aGlob = (double) c.globalAuxCoeff() * e / ((double) k * ng * ng);
        out.globalAuxLoss = aGlob * dot;
      }
      if (z) out.zLoss = (double) c.zCoeff() * zsum / nn;
    }
    if (grad == null || n == 0 || (aAux == 0.0 && aSeq == 0.0 && aGlob == 0.0 && !z)) return;
    float[][] dA = null;
    if (aAux != 0.0 || aSeq != 0.0 || aGlob != 0.0) {
      dA = new float[seq ? B : 1][e];
      for (int b = 0; b < dA.length; b++)
        for (int i = 0; i < e; i++) {
          double d = 0.0;
          if (aAux != 0.0) d += aAux * (double) cn[i];
          if (aGlob != 0.0) d += aGlob * globalTokens[i];
          if (aSeq != 0.0) d += aSeq * (double) cb[b * e + i];
          dA[b][i] = (float) d;
        }
    }
    final float zc = z ? (float) (2.0 * (double) c.zCoeff() / (double) n) : 0f;
    for (int t = 0; t < tokens; t++) {
      loadRow(f32, half, type, t, e, row);
      if ((valid != null && valid[t] == 0) || (zero && !finiteRow(row, e))) continue;
      final int off = t * e;
      if (dA != null) {
        kernel.auxScoresRow(row, scores);
        int b = !seq ? 0 : (int) (bs ? t / seqLen : t % batch);
        kernel.auxGradRow(row, scores, dA[b], 1f, grad, off);  // c = 1 is exact: dA holds the coefficients
      }
      if (z) {
        kernel.rowSoftmax(row);
        final float gz = zc * lse(kernel);
        for (int i = 0; i < e; i++)
          grad[off + i] = grad[off + i] + gz * (JavaRouting.expDet(row[i] - kernel.rowMax) / kernel.rowSum);
      }
    }
  }

  /** row_lse: max + log_det(sum) in float (sum >= 1 for a finite row), NaN for a non-finite row. */
  private static float lse(JavaRouting.Kernel kernel) {
    float sum = kernel.rowSum;
    return JavaRouting.isFinite(sum) ? kernel.rowMax + JavaRouting.logDet(sum) : sum - sum;
  }

  /** cpu_drop_tokens; returns the routed entries dropped. */
  static long dropTokens(RouterConfig rc, TokenDropping d, int[] idx, float[] w, int tokens, byte[] map, float[] probs,
      byte[] kept, int[] keptCounts) {
    final int e = rc.experts(), k = rc.topK(), n = tokens * k;
    final long cap = d.capacity(tokens, k, e);
    final boolean drop = cap < tokens, pad = d.padToCapacity();
    int[] begin = new int[e + 1];
    for (int i = 0; i < n; i++) begin[idx[i] + 1]++;
    for (int x = 0; x < e; x++) begin[x + 1] += begin[x];
    int[] entry = new int[n];
    int[] next = Arrays.copyOf(begin, e);
    for (int i = 0; i < n; i++) entry[next[idx[i]]++] = i;
    if (map != null) Arrays.fill(map, 0, tokens * e, (byte) 0);
    if (probs != null) Arrays.fill(probs, 0, tokens * e, 0f);
    if (kept != null) Arrays.fill(kept, 0, n, (byte) 0);
    Drop x = new Drop(idx, w, tokens, k, e, pad, entry, begin, map, probs, kept);
    long[] keys = d.policy() == DropPolicy.PROBS ? new long[n] : null;
    long total = 0;
    for (int ex = 0; ex < e; ex++) {
      final int b0 = begin[ex], count = begin[ex + 1] - b0;
      x.keptCount = 0;
      if (!drop) {
        for (int i = 0; i < count; i++) x.keep(ex, entry[b0 + i]);
        if (pad && map != null) for (int t = 0; t < tokens; t++) map[t * e + ex] = 1;
      } else if (d.policy() == DropPolicy.POSITION) {
        final int routed = (int) Math.min(count, cap);
        for (int i = 0; i < routed; i++) x.keep(ex, entry[b0 + i]);
        if (pad && routed < cap) x.takeInTokenOrder(ex, cap - routed, -1);
      } else {
        // Sorted ascending, walked from the end: descending (prob, lower index) as the native keys.
        for (int i = 0; i < count; i++) keys[b0 + i] = JavaRouting.rankKey(w[entry[b0 + i]], entry[b0 + i] / k);
        Arrays.sort(keys, b0, b0 + count);
        long left = cap;
        int i = 0;
        for (; i < count && left > 0 && scoreKeyOf(keys[b0 + count - 1 - i]) > ZERO_KEY; i++, left--)
          x.keep(ex, x.entryOf(ex, keys[b0 + count - 1 - i]));
        if (left > 0) {
          long zeros = 0;
          for (int m = i; m < count && scoreKeyOf(keys[b0 + count - 1 - m]) == ZERO_KEY; m++) zeros++;
          zeros += tokens - count;
          final long take = Math.min(left, zeros);
          x.takeInTokenOrder(ex, take, ZERO_KEY);
          left -= take;
          i += (int) (zeros - (tokens - count));
          for (; i < count && left > 0; i++, left--) x.keep(ex, x.entryOf(ex, keys[b0 + count - 1 - i]));
        }
      }
      if (keptCounts != null) keptCounts[ex] = x.keptCount;
      total += x.keptCount;
    }
    return (long) n - total;
  }

  /** A token not routed to the expert has prob 0: its score key. */
  private static final long ZERO_KEY = JavaRouting.scoreKey(0f);

  private static long scoreKeyOf(long rankKey) {
    return rankKey >>> 31;
  }

  /** One drop call's arrays and its keep steps (keep_entry, take_in_token_order). */
  private static final class Drop {
    final int[] idx, entry, begin;
    final float[] w, probs;
    final byte[] map, keptMask;
    final int tokens, k, e;
    final boolean pad;
    int keptCount;  // routed entries kept by the current expert

    Drop(int[] idx, float[] w, int tokens, int k, int e, boolean pad, int[] entry, int[] begin, byte[] map,
        float[] probs, byte[] keptMask) {
      this.idx = idx;
      this.w = w;
      this.tokens = tokens;
      this.k = k;
      this.e = e;
      this.pad = pad;
      this.entry = entry;
      this.begin = begin;
      this.map = map;
      this.probs = probs;
      this.keptMask = keptMask;
    }

    void keep(int ex, int en) {
      final int t = en / k;
      if (keptMask != null) keptMask[en] = 1;
      if (map != null) map[t * e + ex] = 1;
      if (probs != null) probs[t * e + ex] = w[en];
      keptCount++;
    }

    int entryOf(int ex, long key) {
      final int t = JavaRouting.rankKeyIndex(key);
      int j = 0;
      while (idx[t * k + j] != ex) j++;
      return t * k + j;
    }

    /**
     * take_in_token_order: the next {@code n} tokens of expert ex by index; a routed one only when its prob's
     * score key is {@code acceptKey} (-1: never; the others are placed by key), a non-routed one always (a
     * padding slot on the map with pad_to_capacity, else a slot that keeps nothing).
     */
    void takeInTokenOrder(int ex, long n, long acceptKey) {
      final int b0 = begin[ex], count = begin[ex + 1] - b0;
      int next = 0;
      for (int t = 0; t < tokens && n > 0; t++) {
        while (next < count && entry[b0 + next] / k < t) next++;
        if (next < count && entry[b0 + next] / k == t) {
          final int en = entry[b0 + next];
          if (acceptKey < 0 || JavaRouting.scoreKey(w[en]) != acceptKey) continue;
          keep(ex, en);
        } else if (pad && map != null) {
          map[t * e + ex] = 1;
        }
        n--;
      }
    }
  }
}
