// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

import java.util.Arrays;
import org.moerouter.MinusOneRows;

/**
 * Set-time validation of replay targets (docs/semantics.md section 4 rows, plus the {@link MinusOneRows}
 * policy) for one layer. Messages use the routers' wording for bad rows ("row 3: expert 17 at position 1 is
 * out of range [0, 16)") prefixed by the layer. Nothing is rewritten unless a -1 row needs it, and then
 * copies are made: the caller's arrays are never modified.
 */
final class TargetRows {
  private TargetRows() {}

  /** Validated indices and mask ready for the router: -1 rows already resolved by the policy. */
  static final class Checked {
    final int[] indices;
    final byte[] mask;

    Checked(int[] indices, byte[] mask) {
      this.indices = indices;
      this.mask = mask;
    }
  }

  static String shape(long... dims) {
    return Arrays.toString(dims);
  }

  /**
   * Elements an array of {@code shape} holds, or -1 when a dimension is negative. The factors are capped at
   * 2^31 (more than any Java array holds), so the product is exact below that and never wraps around to a
   * small count above it: a shape of [2^62, 4] describes no Java array, not an empty one.
   */
  static long elements(long[] shape) {
    long n = 1;
    for (long d : shape) {
      if (d < 0) return -1;
      n = Math.min(n, 1L << 31) * Math.min(d, 1L << 31);
    }
    return n;
  }

  /** The shape a Java array of {@code length} ints holds when read as rows of {@code tokens}. */
  static String impliedShape(int length, int tokens) {
    if (tokens == 0) return length == 0 ? "[0, ?]" : "[0, ?] (" + length + " ints)";
    if (length % tokens == 0) return shape(tokens, length / tokens);
    return "[" + tokens + ", ?] (" + length + " ints, not a multiple of " + tokens + ")";
  }

  /**
   * Checks every row that the mask does not exclude. Returns the arrays to use (the given ones unless an
   * all-(-1) row had to be rewritten under LIVE or ARANGE).
   */
  static Checked check(LayerKey layer, int experts, int k, int[] idx, byte[] mask, int tokens, MinusOneRows policy) {
    int[] liveRows = null;
    int nLive = 0;
    int[] seenRow = null, seenAt = null;
    boolean arange = false;
    for (int t = 0; t < tokens; t++) {
      if (mask != null && mask[t] == 0) continue;
      int base = t * k;
      int minusOnes = 0;
      for (int j = 0; j < k; j++) if (idx[base + j] == -1) minusOnes++;
      if (minusOnes == k) {
        switch (policy) {
          case LIVE:
            if (liveRows == null) liveRows = new int[Math.min(tokens, 16)];
            if (nLive == liveRows.length) liveRows = Arrays.copyOf(liveRows, Math.min(tokens, 2 * nLive));
            liveRows[nLive++] = t;
            continue;
          case ARANGE:
            arange = true;
            continue;
          default:
            throw new ReplayStateException(layer, layer + ": target row " + t + " is all -1 (padding), rejected under"
                + " minus_one_rows REJECT (use LIVE to route it live or ARANGE to replay experts 0..k-1)");
        }
      }
      if (minusOnes > 0)
        throw new ReplayStateException(layer, layer + ": target row " + t + " mixes -1 (padding) with experts "
            + Arrays.toString(Arrays.copyOfRange(idx, base, base + k)) + "; a padding row must be all -1");
      for (int j = 0; j < k; j++) {
        int e = idx[base + j];
        if (e < 0 || e >= experts)
          throw new ReplayStateException(layer, layer + ": target row " + t + ": expert " + e + " at position " + j
              + " is out of range [0, " + experts + ")");
        // O(k) per row: seenRow[e] == t + 1 marks e as taken in this row, at position seenAt[e].
        if (seenRow == null) {
          seenRow = new int[experts];
          seenAt = new int[experts];
        }
        if (seenRow[e] == t + 1)
          throw new ReplayStateException(layer, layer + ": target row " + t + ": expert " + e + " appears twice"
              + " (positions " + seenAt[e] + " and " + j + ")");
        seenRow[e] = t + 1;
        seenAt[e] = j;
      }
    }
    if (nLive == 0 && !arange) return new Checked(idx, mask);
    if (nLive > 0) {
      byte[] m = mask != null ? mask.clone() : filled(tokens);
      for (int i = 0; i < nLive; i++) m[liveRows[i]] = 0;
      return new Checked(idx, m);
    }
    int[] out = idx.clone();
    for (int t = 0; t < tokens; t++) {
      if (mask != null && mask[t] == 0) continue;
      if (out[t * k] != -1) continue; // rows reaching here are either all -1 or valid
      for (int j = 0; j < k; j++) out[t * k + j] = j;
    }
    return new Checked(out, mask);
  }

  private static byte[] filled(int tokens) {
    byte[] m = new byte[tokens];
    Arrays.fill(m, (byte) 1);
    return m;
  }
}
