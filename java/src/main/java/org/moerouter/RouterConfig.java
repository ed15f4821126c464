// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.util.Arrays;
import java.util.Objects;

/**
 * Immutable router configuration (ROUTING_SPEC.md sections 1-3), validated when built.
 *
 * <pre>{@code
 * RouterConfig deepseekV3 = RouterConfig.builder(256, 8)
 *     .scoreFunction(ScoreFunction.SIGMOID).expertBias(bias)
 *     .groups(8, 4).scale(2.5f).build();
 * }</pre>
 */
public final class RouterConfig {
  /** Limits shared by every backend (moe_router.h). */
  public static final int MAX_EXPERTS = 4096;
  public static final int MAX_TOP_K = 64;
  public static final int MAX_GROUPS = 64;

  private final int experts;
  private final int topK;
  private final ScoreFunction scoreFunction;
  private final boolean preSoftmax;
  private final float[] expertBias;
  private final int groups;
  private final int groupTopK;
  private final float scale;

  private RouterConfig(Builder b) {
    this.experts = b.experts;
    this.topK = b.topK;
    this.scoreFunction = b.scoreFunction;
    this.preSoftmax = b.preSoftmax;
    this.expertBias = b.expertBias == null ? null : b.expertBias.clone();
    this.groups = b.groups;
    this.groupTopK = b.groupTopK;
    this.scale = b.scale;
  }

  public static Builder builder(int experts, int topK) {
    return new Builder(experts, topK);
  }

  public int experts() {
    return experts;
  }

  public int topK() {
    return topK;
  }

  public ScoreFunction scoreFunction() {
    return scoreFunction;
  }

  public boolean preSoftmax() {
    return preSoftmax;
  }

  /** A copy of the expert bias, or null. */
  public float[] expertBias() {
    return expertBias == null ? null : expertBias.clone();
  }

  public boolean hasExpertBias() {
    return expertBias != null;
  }

  float[] expertBiasUnsafe() {
    return expertBias;
  }

  /** Number of expert groups; 0 when routing is not group-limited. */
  public int groups() {
    return groups;
  }

  /** Groups kept per token; 0 when routing is not group-limited. */
  public int groupTopK() {
    return groupTopK;
  }

  /** True when selection is limited to the best groups. */
  public boolean grouped() {
    return groups > 1 && groupTopK > 0 && groupTopK < groups;
  }

  public float scale() {
    return scale;
  }

  /** A builder starting from this configuration. */
  public Builder toBuilder() {
    Builder b = new Builder(experts, topK).scoreFunction(scoreFunction).preSoftmax(preSoftmax).scale(scale);
    b.expertBias = expertBias == null ? null : expertBias.clone();
    b.groups = groups;
    b.groupTopK = groupTopK;
    return b;
  }

  /** Same configuration with another expert bias (for the aux-loss-free balancing update). */
  public RouterConfig withExpertBias(float[] bias) {
    return toBuilder().expertBias(bias).build();
  }

  @Override
  public boolean equals(Object o) {
    if (!(o instanceof RouterConfig)) return false;
    RouterConfig c = (RouterConfig) o;
    return experts == c.experts && topK == c.topK && scoreFunction == c.scoreFunction
        && preSoftmax == c.preSoftmax && groups == c.groups && groupTopK == c.groupTopK
        && Float.compare(scale, c.scale) == 0 && Arrays.equals(expertBias, c.expertBias);
  }

  @Override
  public int hashCode() {
    return Objects.hash(experts, topK, scoreFunction, preSoftmax, groups, groupTopK, scale)
        * 31 + Arrays.hashCode(expertBias);
  }

  @Override
  public String toString() {
    StringBuilder s = new StringBuilder("RouterConfig{experts=").append(experts).append(", topK=").append(topK)
        .append(", score=").append(scoreFunction.name().toLowerCase());
    if (preSoftmax) s.append(", preSoftmax");
    if (expertBias != null) s.append(", expertBias");
    if (grouped()) s.append(", groups=").append(groups).append(", groupTopK=").append(groupTopK);
    if (scale != 1f) s.append(", scale=").append(scale);
    return s.append('}').toString();
  }

  /** Builder; {@link #build()} checks every constraint and names the one that fails. */
  public static final class Builder {
    private final int experts;
    private final int topK;
    private ScoreFunction scoreFunction = ScoreFunction.SOFTMAX;
    private boolean preSoftmax;
    private float[] expertBias;
    private int groups;
    private int groupTopK;
    private float scale = 1f;

    private Builder(int experts, int topK) {
      this.experts = experts;
      this.topK = topK;
    }

    public Builder scoreFunction(ScoreFunction f) {
      this.scoreFunction = Objects.requireNonNull(f, "scoreFunction");
      return this;
    }

    /** Softmax over all experts before top-k (DeepSeek-V2 style, no renormalisation). */
    public Builder preSoftmax(boolean pre) {
      this.preSoftmax = pre;
      return this;
    }

    /** Expert bias [experts] added to sigmoid scores for selection only; null for none. */
    public Builder expertBias(float[] bias) {
      this.expertBias = bias == null ? null : bias.clone();
      return this;
    }

    /** Group-limited routing: {@code groups} contiguous groups, keep the best {@code groupTopK}. */
    public Builder groups(int groups, int groupTopK) {
      this.groups = groups;
      this.groupTopK = groupTopK;
      return this;
    }

    /** Multiplies the weights (routed scaling factor). */
    public Builder scale(float scale) {
      this.scale = scale;
      return this;
    }

    public RouterConfig build() {
      if (experts < 1 || experts > MAX_EXPERTS)
        throw invalid("experts must be in [1, " + MAX_EXPERTS + "], got " + experts);
      if (topK < 1 || topK > MAX_TOP_K) throw invalid("topK must be in [1, " + MAX_TOP_K + "], got " + topK);
      if (topK > experts)
        throw invalid("topK (" + topK + ") exceeds the number of experts (" + experts + ")");
      if (preSoftmax && scoreFunction != ScoreFunction.SOFTMAX)
        throw invalid("pre-softmax applies to the softmax score function only");
      if (expertBias != null) {
        if (scoreFunction != ScoreFunction.SIGMOID)
          throw invalid("expert bias applies to the sigmoid score function only");
        if (expertBias.length != experts)
          throw invalid("expert bias has " + expertBias.length + " entries, expected " + experts);
        for (int i = 0; i < experts; i++)
          if (!Float.isFinite(expertBias[i])) throw invalid("expert bias[" + i + "] is not finite");
      }
      if (!(scale > 0f) || !Float.isFinite(scale)) throw invalid("scale must be finite and > 0, got " + scale);
      if (groups < 0 || groupTopK < 0)
        throw invalid("groups (" + groups + ") and group topK (" + groupTopK + ") must be >= 0");
      if (groups > 1 || groupTopK > 0) {
        if (groups < 1 || groups > MAX_GROUPS)
          throw invalid("groups must be in [1, " + MAX_GROUPS + "], got " + groups);
        if (experts % groups != 0)
          throw invalid("experts (" + experts + ") not divisible by groups (" + groups + ")");
        if (groupTopK < 1 || groupTopK > groups)
          throw invalid("group topK must be in [1, groups=" + groups + "], got " + groupTopK);
        if (topK % groupTopK != 0)
          throw invalid("topK (" + topK + ") not divisible by group topK (" + groupTopK + ")");
        if (topK / groupTopK > experts / groups)
          throw invalid("topK/groupTopK (" + topK / groupTopK + ") exceeds the group size (" + experts / groups + ")");
      }
      return new RouterConfig(this);
    }

    private static MoeRouterException invalid(String message) {
      return new MoeRouterException(Status.INVALID_ARGUMENT, "invalid router config: " + message);
    }
  }
}
