// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.util.Objects;

/**
 * Token dropping with a capacity factor (docs/semantics.md section 6; Megatron
 * {@code moe_expert_capacity_factor}, {@code moe_token_drop_policy}, {@code moe_pad_expert_input_to_capacity}):
 * immutable, validated when made. {@link MoeRouter#dropTokens} applies it to a live or replayed selection.
 *
 * <pre>{@code
 * TokenDropping drop = TokenDropping.of(1.25, DropPolicy.PROBS, false);
 * router.route(logits, T, idx, w, rows);
 * router.dropTokens(drop, idx, w, T, finalMap, finalProbs, kept, keptCounts);   // dispatch finalMap / finalProbs
 * TokenDropping.maskDropped(T, k, dW, kept, dW);                                // dropped entries get no gradient
 * router.backward(logits, T, idx, dW, rows, dL);
 * }</pre>
 *
 * <p>Traps: the capacity counts every token of the call, padding included (padding changes no drop
 * decision); with {@code padToCapacity} the final map holds rows that were not routed to the expert (prob
 * 0), so count tokens from the final map, not from the indices; a capacity {@code >= tokens} drops nothing.
 */
public final class TokenDropping {
  private final double capacityFactor;
  private final DropPolicy policy;
  private final boolean padToCapacity;

  private TokenDropping(double capacityFactor, DropPolicy policy, boolean padToCapacity) {
    this.capacityFactor = capacityFactor;
    this.policy = policy;
    this.padToCapacity = padToCapacity;
  }

  /**
   * A token-dropping setting; the same rule and text as {@code moe_drop_tokens_host}.
   *
   * @param capacityFactor Megatron's {@code moe_expert_capacity_factor}, finite and {@code > 0}
   * @param policy which tokens an over-capacity expert keeps
   * @param padToCapacity Megatron's {@code moe_pad_expert_input_to_capacity}: each expert's final map is
   *     padded with unrouted tokens up to its capacity
   * @return the immutable setting
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when the factor is not finite or not positive
   * @throws NullPointerException when policy is null
   */
  public static TokenDropping of(double capacityFactor, DropPolicy policy, boolean padToCapacity) {
    Objects.requireNonNull(policy, "policy");
    if (!(capacityFactor > 0) || !Double.isFinite(capacityFactor))
      throw new MoeRouterException(Status.INVALID_ARGUMENT, "invalid token dropping: capacity factor must be finite and > 0, got "
          + RouterConfig.Builder.gFormat(capacityFactor));
    return new TokenDropping(capacityFactor, policy, padToCapacity);
  }

  /**
   * The capacity factor.
   *
   * @return a finite factor {@code > 0}
   */
  public double capacityFactor() {
    return capacityFactor;
  }

  /**
   * Which tokens an expert over its capacity keeps.
   *
   * @return PROBS or POSITION
   */
  public DropPolicy policy() {
    return policy;
  }

  /**
   * Whether each expert's final map is padded up to its capacity.
   *
   * @return true when padding slots are added
   */
  public boolean padToCapacity() {
    return padToCapacity;
  }

  /**
   * Tokens each expert keeps: {@code ceil((tokens * k / experts) * capacityFactor)} in float64 (Python's
   * {@code math.ceil}, Megatron {@code get_capacity}), or {@code tokens} when that is larger (nothing
   * dropped).
   *
   * @param tokens T, the rows of the call, {@code >= 0}
   * @param k experts per token, {@code >= 1}
   * @param experts E, {@code >= 1}
   * @return the capacity, in {@code [0, tokens]}
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when an argument is out of range
   */
  public long capacity(long tokens, int k, int experts) {
    if (tokens < 0 || k < 1 || experts < 1)
      throw MoeRouter.invalid("capacity: bad arguments (tokens=" + tokens + ", k=" + k + ", experts=" + experts + ")");
    double cap = Math.ceil(((double) (tokens * k) / experts) * capacityFactor);
    return cap >= tokens ? tokens : (long) cap;
  }

  /**
   * The gradient through kept entries only: {@code out[i] = kept[i] != 0 ? gradWeights[i] : 0} over
   * [tokens, k]. A dropped entry gets exactly 0, even where the upstream gradient is NaN. Then
   * {@link MoeRouter#backward} as usual.
   *
   * @param tokens T, the rows, {@code >= 0}
   * @param k experts per token, {@code >= 1}
   * @param gradWeights the upstream gradient of the weights [tokens, k]
   * @param kept {@code outKept} of {@link MoeRouter#dropTokens} [tokens, k]
   * @param out receives the masked gradient [tokens, k]; may be gradWeights itself
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a bad shape or a short or null array
   */
  public static void maskDropped(int tokens, int k, float[] gradWeights, byte[] kept, float[] out) {
    long n = (long) tokens * k;
    if (tokens < 0 || k < 1) throw MoeRouter.invalid("maskDropped: bad shape [" + tokens + ", " + k + "]");
    MoeRouter.checkCapacity("gradWeights", gradWeights == null ? -1 : gradWeights.length, n);
    MoeRouter.checkCapacity("kept", kept == null ? -1 : kept.length, n);
    MoeRouter.checkCapacity("out", out == null ? -1 : out.length, n);
    for (int i = 0; i < n; i++) out[i] = kept[i] != 0 ? gradWeights[i] : 0f;
  }

  @Override
  public boolean equals(Object o) {
    if (!(o instanceof TokenDropping)) return false;
    TokenDropping d = (TokenDropping) o;
    return Double.compare(capacityFactor, d.capacityFactor) == 0 && policy == d.policy && padToCapacity == d.padToCapacity;
  }

  @Override
  public int hashCode() {
    return Objects.hash(capacityFactor, policy, padToCapacity);
  }

  @Override
  public String toString() {
    return "TokenDropping{capacityFactor=" + capacityFactor + ", policy=" + policy
        + (padToCapacity ? ", padToCapacity" : "") + "}";
  }
}
