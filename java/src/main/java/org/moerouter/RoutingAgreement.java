// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.util.Arrays;
import java.util.Objects;

/**
 * Routing agreement between two selections of the same tokens (live vs replayed, or two traces):
 * per layer, the fraction of (token, layer) rows whose expert sets differ and the mean overlap
 * {@code |A ∩ B| / k}; across layers, the fraction of tokens with a difference in any layer. Rows are
 * compared as sets (order inside a row is ignored).
 *
 * <p>Inputs are [tokens, layers, k] int arrays (layers = 1 for one layer's [tokens, k]). Every row of
 * both selections must hold k distinct experts in {@code [0, E)}; otherwise a
 * {@link MoeRouterException} with status {@link Status#INVALID_REPLAY} names the selection (a/b), token
 * and layer. The computation runs in the native library when it is loaded ({@link NativeLibrary#loaded()})
 * and in Java otherwise; both give identical results and messages. Large inputs (traces) are fed in
 * chunks through an {@link Accumulator}.
 *
 * <pre>{@code
 * RoutingAgreement.Result r = RoutingAgreement.compare(live, replayed, tokens, 1, k, experts);
 * r.differingRowFraction(0);  r.meanOverlap(0);  r.differingTokenFraction();
 * }</pre>
 *
 * <p>Traps: a row with a repeated expert or an index outside {@code [0, E)} is an error, not a
 * disagreement, so selections padded with -1 (slime, miles) must have those rows removed first (trace
 * comparisons leave out unrecorded tokens: {@code TraceMetrics.agreement}). A rejected chunk adds nothing
 * to an {@link Accumulator}.
 */
public final class RoutingAgreement {
  private RoutingAgreement() {}

  /** Which implementation computes the counts. */
  public enum Engine {
    /** Native when loaded, else Java. */
    AUTO,
    /** The native library (fails if it did not load). */
    NATIVE,
    /** Pure Java. */
    JAVA
  }

  /**
   * Agreement of a and b, both [tokens, layers, k], on the fastest engine.
   *
   * @param a the first selection [tokens, layers, k], row-major (may be longer)
   * @param b the second selection, same shape
   * @param tokens tokens to compare, {@code >= 0}
   * @param layers layers per token, {@code >= 1}
   * @param k experts per row, in {@code [1, 64]}
   * @param experts E, {@code >= k}: every index must lie in {@code [0, E)}
   * @return the counts and fractions
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a bad size or an array too short,
   *     {@link Status#INVALID_REPLAY} naming the selection, token and layer of the first invalid row
   */
  public static Result compare(int[] a, int[] b, int tokens, int layers, int k, int experts) {
    return compare(a, b, tokens, layers, k, experts, Engine.AUTO);
  }

  /**
   * Agreement of a and b, both [tokens, layers, k], on the given engine.
   *
   * @param a the first selection [tokens, layers, k], row-major (may be longer)
   * @param b the second selection, same shape
   * @param tokens tokens to compare, {@code >= 0}
   * @param layers layers per token, {@code >= 1}
   * @param k experts per row, in {@code [1, 64]}
   * @param experts E, {@code >= k}: every index must lie in {@code [0, E)}
   * @param engine where the counts are computed; both engines give identical results and messages
   * @return the counts and fractions
   * @throws MoeRouterException as {@link #compare(int[], int[], int, int, int, int)}, and
   *     {@link Status#UNSUPPORTED} for {@link Engine#NATIVE} when the native library did not load
   */
  public static Result compare(int[] a, int[] b, int tokens, int layers, int k, int experts, Engine engine) {
    Accumulator acc = new Accumulator(layers, k, experts, engine);
    acc.add(a, b, tokens);
    return acc.result();
  }

  /**
   * An accumulator of agreement counts over chunks of tokens, for selections too large for one array.
   *
   * @param layers layers per token, {@code >= 1}
   * @param k experts per row, in {@code [1, 64]}
   * @param experts E, {@code >= k}
   * @param engine where the counts are computed
   * @return an empty accumulator
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a bad size, {@link Status#UNSUPPORTED} for
   *     {@link Engine#NATIVE} when the native library did not load
   */
  public static Accumulator accumulator(int layers, int k, int experts, Engine engine) {
    return new Accumulator(layers, k, experts, engine);
  }

  /**
   * Accumulates counts over successive chunks [tokens, layers, k]. Scratch space is reused between
   * calls; not thread-safe.
   *
   * <pre>{@code
   * RoutingAgreement.Accumulator acc = RoutingAgreement.accumulator(layers, k, experts, Engine.AUTO);
   * while (reader.next(a, b)) acc.add(a, b, reader.tokens());
   * RoutingAgreement.Result r = acc.result();
   * }</pre>
   */
  public static final class Accumulator {
    private final int layers;
    private final int k;
    private final int experts;
    private final boolean useNative;
    private final long[] differRows;
    private final long[] overlap;
    private long tokens;
    private long differTokens;
    private int[] scratchA = new int[0];
    private int[] scratchB = new int[0];
    private byte[] rowDiffers = new byte[0];
    private byte[] anyDiffers = new byte[0];
    private final long[] out2 = new long[2];
    private int[] seen;
    private int stamp;

    Accumulator(int layers, int k, int experts, Engine engine) {
      if (layers < 1) throw MoeRouter.invalid("layers must be >= 1, got " + layers);
      if (k < 1 || k > RouterConfig.MAX_TOP_K) throw MoeRouter.invalid("k must be in [1, " + RouterConfig.MAX_TOP_K + "], got " + k);
      if (experts < k) throw MoeRouter.invalid("experts (" + experts + ") must be >= k (" + k + ")");
      Math.multiplyExact(layers, k);
      this.layers = layers;
      this.k = k;
      this.experts = experts;
      switch (Objects.requireNonNull(engine, "engine")) {
        case NATIVE:
          if (!NativeLibrary.loaded())
            throw new MoeRouterException(Status.UNSUPPORTED, "native library unavailable: " + NativeLibrary.loadFailure());
          useNative = true;
          break;
        case JAVA:
          useNative = false;
          break;
        default:
          useNative = NativeLibrary.loaded();
      }
      differRows = new long[layers];
      overlap = new long[layers];
    }

    /**
     * Which engine this accumulator runs on.
     *
     * @return true when the counts come from the native library
     */
    public boolean isNative() {
      return useNative;
    }

    /**
     * Adds {@code tokens} tokens of a and b, both [tokens, layers, k] from index 0. Tokens are numbered
     * across chunks in error messages. All-or-nothing: a chunk with an invalid row adds nothing.
     *
     * @param a the first selection's chunk
     * @param b the second selection's chunk, same shape
     * @param tokens tokens in the chunk, {@code >= 0}
     * @return this accumulator
     * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when an array is too short,
     *     {@link Status#INVALID_REPLAY} naming the selection, token and layer of the first invalid row
     */
    public Accumulator add(int[] a, int[] b, int tokens) {
      Objects.requireNonNull(a, "a");
      Objects.requireNonNull(b, "b");
      if (tokens < 0) throw MoeRouter.invalid("tokens must be >= 0, got " + tokens);
      long need = (long) tokens * layers * k;
      if (a.length < need) throw MoeRouter.invalid("a holds " + a.length + " ints, needs " + need);
      if (b.length < need) throw MoeRouter.invalid("b holds " + b.length + " ints, needs " + need);
      if (tokens == 0) return this;
      if (useNative) addNative(a, b, tokens);
      else addJava(a, b, tokens);
      this.tokens += tokens;
      return this;
    }

    private void addNative(int[] a, int[] b, int tokens) {
      if (anyDiffers.length < tokens) {
        anyDiffers = new byte[tokens];
        rowDiffers = new byte[tokens];
      }
      Arrays.fill(anyDiffers, 0, tokens, (byte) 0);
      long[] diff = new long[layers], ov = new long[layers];
      for (int l = 0; l < layers; l++) {
        int[] sa, sb;
        if (layers == 1) {
          sa = a;
          sb = b;
        } else {
          int n = tokens * k;
          if (scratchA.length < n) {
            scratchA = new int[n];
            scratchB = new int[n];
          }
          int w = layers * k;
          for (int t = 0, src = l * k, dst = 0; t < tokens; t++, src += w, dst += k) {
            System.arraycopy(a, src, scratchA, dst, k);
            System.arraycopy(b, src, scratchB, dst, k);
          }
          sa = scratchA;
          sb = scratchB;
        }
        int st = RouterNative.moe_jni_routing_agreement(sa, sb, tokens, k, k, experts, out2, rowDiffers);
        if (st != 0) {
          // Re-derive the precise position (token, layer) in Java; fall back to the native message.
          validate(a, b, tokens);
          throw RouterNative.error(st, "routing agreement");
        }
        diff[l] = out2[0];
        ov[l] = out2[1];
        for (int t = 0; t < tokens; t++) anyDiffers[t] |= rowDiffers[t];
      }
      // Commit only after every layer passed validation.
      for (int l = 0; l < layers; l++) {
        differRows[l] += diff[l];
        overlap[l] += ov[l];
      }
      for (int t = 0; t < tokens; t++) differTokens += anyDiffers[t];
    }

    private void addJava(int[] a, int[] b, int tokens) {
      validate(a, b, tokens);
      int w = layers * k;
      for (int t = 0; t < tokens; t++) {
        boolean any = false;
        for (int l = 0; l < layers; l++) {
          int base = t * w + l * k;
          int common = 0;
          for (int i = 0; i < k; i++) {
            int e = a[base + i];
            for (int j = 0; j < k; j++) if (b[base + j] == e) common++;
          }
          overlap[l] += common;
          if (common != k) {
            differRows[l]++;
            any = true;
          }
        }
        if (any) differTokens++;
      }
    }

    private void validate(int[] a, int[] b, int tokens) {
      if (seen == null) seen = new int[experts];
      int w = layers * k;
      for (int t = 0; t < tokens; t++)
        for (int l = 0; l < layers; l++)
          for (int s = 0; s < 2; s++) {
            int[] x = s == 0 ? a : b;
            if (++stamp == Integer.MAX_VALUE) {
              Arrays.fill(seen, 0);
              stamp = 1;
            }
            int base = t * w + l * k;
            for (int j = 0; j < k; j++) {
              int e = x[base + j];
              String where = "routing agreement: selection " + (s == 0 ? 'a' : 'b') + " token " + (this.tokens + t)
                  + " layer " + l + ": expert " + e;
              if (e < 0 || e >= experts)
                throw new MoeRouterException(Status.INVALID_REPLAY, where + " out of range [0, " + experts + ")");
              if (seen[e] == stamp) throw new MoeRouterException(Status.INVALID_REPLAY, where + " appears twice");
              seen[e] = stamp;
            }
          }
    }

    /**
     * The counts so far; the accumulator can keep adding.
     *
     * @return a snapshot of the counts of every chunk added
     */
    public Result result() {
      return new Result(tokens, k, differRows.clone(), overlap.clone(), differTokens);
    }
  }

  /** Agreement counts and fractions. Fractions of an empty comparison are 0 (overlap 1). */
  public static final class Result {
    private final long tokens;
    private final int k;
    private final long[] differRows;
    private final long[] overlap;
    private final long differTokens;

    Result(long tokens, int k, long[] differRows, long[] overlap, long differTokens) {
      this.tokens = tokens;
      this.k = k;
      this.differRows = differRows;
      this.overlap = overlap;
      this.differTokens = differTokens;
    }

    /**
     * Tokens compared.
     *
     * @return the tokens of every chunk added
     */
    public long tokens() {
      return tokens;
    }

    /**
     * Layers per token.
     *
     * @return the layers of the comparison
     */
    public int layers() {
      return differRows.length;
    }

    /**
     * Experts per row.
     *
     * @return k
     */
    public int topK() {
      return k;
    }

    /**
     * Rows (tokens) of {@code layer} whose expert sets differ.
     *
     * @param layer a layer position, in {@code [0, layers())}
     * @return the number of differing rows of that layer
     * @throws ArrayIndexOutOfBoundsException when layer is outside {@code [0, layers())}
     */
    public long differingRows(int layer) {
      return differRows[layer];
    }

    /**
     * Fraction of the tokens of {@code layer} whose expert sets differ.
     *
     * @param layer a layer position, in {@code [0, layers())}
     * @return in {@code [0, 1]}; 0 when no token was compared
     */
    public double differingRowFraction(int layer) {
      return tokens == 0 ? 0 : (double) differRows[layer] / tokens;
    }

    /**
     * Sum over the tokens of {@code layer} of |A ∩ B|.
     *
     * @param layer a layer position, in {@code [0, layers())}
     * @return the total overlap, at most {@code tokens() * k}
     */
    public long overlapTotal(int layer) {
      return overlap[layer];
    }

    /**
     * Mean of |A ∩ B| / k over the tokens of {@code layer}.
     *
     * @param layer a layer position, in {@code [0, layers())}
     * @return in {@code [0, 1]}; 1 when no token was compared
     */
    public double meanOverlap(int layer) {
      return tokens == 0 ? 1 : (double) overlap[layer] / ((double) tokens * k);
    }

    /**
     * All layers together: differing (token, layer) pairs.
     *
     * @return the sum of {@link #differingRows(int)} over the layers
     */
    public long differingRows() {
      long s = 0;
      for (long d : differRows) s += d;
      return s;
    }

    /**
     * Fraction of all (token, layer) pairs whose sets differ.
     *
     * @return in {@code [0, 1]}; 0 when no token was compared
     */
    public double differingRowFraction() {
      return tokens == 0 ? 0 : (double) differingRows() / ((double) tokens * layers());
    }

    /**
     * Tokens with a difference in at least one layer.
     *
     * @return the count of such tokens
     */
    public long differingTokens() {
      return differTokens;
    }

    /**
     * Fraction of tokens with a difference in at least one layer: the fraction of tokens that would run
     * through at least one different expert.
     *
     * @return in {@code [0, 1]}; 0 when no token was compared
     */
    public double differingTokenFraction() {
      return tokens == 0 ? 0 : (double) differTokens / tokens;
    }

    /**
     * Mean overlap |A ∩ B| / k over all (token, layer) pairs.
     *
     * @return in {@code [0, 1]}; 1 when no token was compared
     */
    public double meanOverlap() {
      long s = 0;
      for (long o : overlap) s += o;
      return tokens == 0 ? 1 : (double) s / ((double) tokens * layers() * k);
    }

    @Override
    public boolean equals(Object o) {
      if (!(o instanceof Result)) return false;
      Result r = (Result) o;
      return tokens == r.tokens && k == r.k && differTokens == r.differTokens && Arrays.equals(differRows, r.differRows)
          && Arrays.equals(overlap, r.overlap);
    }

    @Override
    public int hashCode() {
      return Long.hashCode(tokens) * 31 + Arrays.hashCode(differRows) * 17 + Arrays.hashCode(overlap);
    }

    @Override
    public String toString() {
      return String.format("RoutingAgreement{tokens=%d, layers=%d, k=%d, differingRows=%.6f, differingTokens=%.6f, meanOverlap=%.6f}",
          tokens, layers(), k, differingRowFraction(), differingTokenFraction(), meanOverlap());
    }
  }
}
