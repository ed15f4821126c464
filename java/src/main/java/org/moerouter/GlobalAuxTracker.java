// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.util.Arrays;

/**
 * The running state of the global aux loss (docs/semantics.md section 6; Megatron's
 * {@code global_tokens_per_expert} and {@code ga_steps} buffers): per micro-batch {@code acc += g; n += 1;
 * G = acc / n}, reset at the end of each global batch. {@code g} [E] are this micro-batch's aux-map counts
 * summed over the tp*dp*cp ranks (one rank: {@link LossValues#auxTokensPerExpert()} of a call with the
 * same tokens); Ng, this micro-batch's global token count, is {@code sum_i g_i / k}.
 *
 * <pre>{@code
 * GlobalAuxTracker global = new GlobalAuxTracker(experts, k);     // one per MoE layer
 * for (micro-batch) {
 *   router.losses(logits, T, valid, countsOnly, null, 0, null, values);     // c, or from the previous forward
 *   global.add(allReduceSum(values.auxTokensPerExpert()));
 *   router.losses(logits, T, valid, losses, global.tokensPerExpert(g), global.numTokens(), grad, values);
 * }
 * global.reset();                                                  // end of the global batch
 * }</pre>
 *
 * <p>Not thread-safe (one per layer, used by the thread that runs the layer). Allocation-free after
 * construction.
 */
public final class GlobalAuxTracker {
  private final int experts;
  private final int topK;
  private final double[] acc;
  private int steps;
  private double numTokens;

  /**
   * A tracker with no micro-batch added.
   *
   * @param experts E, in {@code [1, RouterConfig.MAX_EXPERTS]}
   * @param topK k, in {@code [1, experts]}: Ng = sum of the counts / k
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when experts or topK is out of range
   */
  public GlobalAuxTracker(int experts, int topK) {
    if (experts < 1 || experts > RouterConfig.MAX_EXPERTS)
      throw MoeRouter.invalid("experts must be in [1, " + RouterConfig.MAX_EXPERTS + "], got " + experts);
    if (topK < 1 || topK > experts) throw MoeRouter.invalid("topK must be in [1, experts], got " + topK);
    this.experts = experts;
    this.topK = topK;
    this.acc = new double[experts];
  }

  /**
   * Adds one micro-batch's global counts g (integers summed over the ranks).
   *
   * @param globalCounts g [E], each {@code >= 0}
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a null array, a length other than E or a
   *     negative count; the state is unchanged then
   */
  public void add(int[] globalCounts) {
    check(globalCounts == null ? -1 : globalCounts.length);
    for (int i = 0; i < experts; i++)
      if (globalCounts[i] < 0) throw MoeRouter.invalid("global counts[" + i + "] is negative: " + globalCounts[i]);
    double sum = 0;
    for (int i = 0; i < experts; i++) {
      acc[i] += globalCounts[i];
      sum += globalCounts[i];
    }
    step(sum);
  }

  /**
   * Adds one micro-batch's global counts g given as doubles (Megatron keeps them in float).
   *
   * @param globalCounts g [E], each finite and {@code >= 0}
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a null array, a length other than E or a
   *     negative or non-finite count; the state is unchanged then
   */
  public void add(double[] globalCounts) {
    check(globalCounts == null ? -1 : globalCounts.length);
    for (int i = 0; i < experts; i++)
      if (!(globalCounts[i] >= 0) || !Double.isFinite(globalCounts[i]))
        throw MoeRouter.invalid("global counts[" + i + "] must be finite and >= 0, got " + globalCounts[i]);
    double sum = 0;
    for (int i = 0; i < experts; i++) {
      acc[i] += globalCounts[i];
      sum += globalCounts[i];
    }
    step(sum);
  }

  private void check(int length) {
    if (length < 0) throw MoeRouter.invalid("global counts must not be null");
    if (length != experts) throw MoeRouter.invalid("global counts hold " + length + " entries, expected " + experts);
  }

  private void step(double sum) {
    steps++;
    numTokens = sum / topK;
  }

  /**
   * G = the accumulated counts / the micro-batches added since the reset (Megatron's running average).
   *
   * @param out receives G [E] (at least E entries)
   * @return out
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when out is null or shorter than E
   * @throws IllegalStateException when no micro-batch was added since the last reset
   */
  public double[] tokensPerExpert(double[] out) {
    if (out == null || out.length < experts)
      throw MoeRouter.invalid("out must hold " + experts + " entries, got " + (out == null ? "null" : out.length));
    if (steps == 0) throw new IllegalStateException("global aux loss: no micro-batch added since the last reset");
    for (int i = 0; i < experts; i++) out[i] = acc[i] / steps;
    return out;
  }

  /**
   * Ng of the last micro-batch added: {@code sum_i g_i / k}.
   *
   * @return Ng; 0 before the first micro-batch and after a reset
   */
  public double numTokens() {
    return numTokens;
  }

  /**
   * Micro-batches added since the last reset (Megatron {@code ga_steps}).
   *
   * @return the count, {@code >= 0}
   */
  public int steps() {
    return steps;
  }

  /** Forgets every micro-batch: call it at the end of each global batch. */
  public void reset() {
    Arrays.fill(acc, 0.0);
    steps = 0;
    numTokens = 0;
  }

  @Override
  public String toString() {
    return "GlobalAuxTracker{experts=" + experts + ", topK=" + topK + ", steps=" + steps + ", numTokens=" + numTokens + "}";
  }
}
