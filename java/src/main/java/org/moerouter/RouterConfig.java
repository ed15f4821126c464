// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.util.Arrays;
import java.util.Objects;

/**
 * Immutable router configuration (docs/semantics.md sections 1-5), validated when built.
 *
 * <pre>{@code
 * RouterConfig deepseekV3 = RouterConfig.builder(256, 8)
 *     .scoreFunction(ScoreFunction.SIGMOID).expertBias(bias)
 *     .groups(8, 4).groupScore(GroupScore.TOP2_SUM).scale(2.5f).build();
 * }</pre>
 *
 * <p>Options and their defaults (unset = the spec default):
 * <ul>
 *   <li>{@link Builder#scoreFunction}: SOFTMAX (post unless {@link Builder#preSoftmax}), SIGMOID, SQRTSOFTPLUS;</li>
 *   <li>{@link Builder#expertBias}: R = S + b (sigmoid, sqrtsoftplus) or P + b (softmax pre only); selection
 *       only, never the weights. Without a bias experts are ranked by the logit;</li>
 *   <li>{@link Builder#normalize}: renormalise the k weights; default true for sigmoid and sqrtsoftplus,
 *       false for softmax pre; softmax post is normalised by construction; k = 1 never is;</li>
 *   <li>{@link Builder#groups} and {@link Builder#groupScore} (TOPK_SUM by default);</li>
 *   <li>{@link Builder#nonFinite}: PROPAGATE (default), ZERO or ERROR;</li>
 *   <li>{@link Builder#minusOneRows}: what replay does with all -1 rows, REJECT (default), LIVE or ARANGE.</li>
 * </ul>
 * The native library checks the same rules with the same messages ({@code moe_config_validate}).
 *
 * <p>A configuration is immutable and safe to share between threads and routers; a {@link Builder} is
 * not thread-safe. {@link #equals} compares the effective {@link #normalize()}, so an explicit setting
 * equal to the default makes an equal configuration.
 *
 * <p>Traps: the bias passed to the builder is copied, so later writes to the caller's array change
 * nothing (use {@link MoeRouter#setExpertBias}); {@link #expertBias()} is the creation-time bias, not the
 * one a router has reached after balancing updates; build-time errors are
 * {@link MoeRouterException}s ({@link Status#INVALID_ARGUMENT}), not {@code IllegalArgumentException}s.
 */
public final class RouterConfig {
  /** Most experts a router may have (E), on every backend; mirrors {@code MOE_MAX_EXPERTS} in moe_router.h. */
  public static final int MAX_EXPERTS = 4096;
  /** Most experts per token (k), on every backend; mirrors {@code MOE_MAX_TOPK} in moe_router.h. */
  public static final int MAX_TOP_K = 64;
  /**
   * Most expert groups for group-limited routing; mirrors {@code MOE_MAX_GROUPS} in moe_router.h (the kept-group
   * mask is one 64-bit word).
   */
  public static final int MAX_GROUPS = 64;

  private final int experts;
  private final int topK;
  private final ScoreFunction scoreFunction;
  private final boolean preSoftmax;
  private final float[] expertBias;
  private final int groups;
  private final int groupTopK;
  private final float scale;
  private final Boolean normalize;  // null: the spec default
  private final GroupScore groupScore;
  private final NonFinitePolicy nonFinite;
  private final MinusOneRows minusOneRows;

  private RouterConfig(Builder b) {
    this.experts = b.experts;
    this.topK = b.topK;
    this.scoreFunction = b.scoreFunction;
    this.preSoftmax = b.preSoftmax;
    this.expertBias = b.expertBias == null ? null : b.expertBias.clone();
    this.groups = b.groups;
    this.groupTopK = b.groupTopK;
    this.scale = b.scale;
    this.normalize = b.normalize;
    this.groupScore = b.groupScore;
    this.nonFinite = b.nonFinite;
    this.minusOneRows = b.minusOneRows;
  }

  /**
   * A builder with the spec defaults (softmax post, no bias, no groups, scale 1, PROPAGATE, REJECT). The
   * shape is checked at {@link Builder#build()}, not here.
   *
   * <pre>{@code
   * RouterConfig mixtral = RouterConfig.builder(8, 2).build();        // softmax post, top-2
   * RouterConfig qwen3 = RouterConfig.builder(128, 8).build();
   * RouterConfig dsV3 = RouterConfig.builder(256, 8).scoreFunction(ScoreFunction.SIGMOID)
   *     .expertBias(bias).groups(8, 4).groupScore(GroupScore.TOP2_SUM).scale(2.5f).build();
   * }</pre>
   *
   * @param experts E, in {@code [1, MAX_EXPERTS]}
   * @param topK k, in {@code [1, min(E, MAX_TOP_K)]}
   * @return a new builder
   */
  public static Builder builder(int experts, int topK) {
    return new Builder(experts, topK);
  }

  /**
   * Number of experts.
   *
   * @return E, the columns of the logits [tokens, E]
   */
  public int experts() {
    return experts;
  }

  /**
   * Experts selected per token.
   *
   * @return k, the columns of the indices and weights [tokens, k]
   */
  public int topK() {
    return topK;
  }

  /**
   * The score function S = f(logits) (docs/semantics.md section 1).
   *
   * @return SOFTMAX, SIGMOID or SQRTSOFTPLUS
   */
  public ScoreFunction scoreFunction() {
    return scoreFunction;
  }

  /**
   * Whether softmax runs over all experts before the top-k (softmax pre) rather than over the k selected
   * logits (softmax post, the default).
   *
   * @return true for softmax pre; always false for the other score functions
   */
  public boolean preSoftmax() {
    return preSoftmax;
  }

  /**
   * The expert bias this configuration was built with. A router's bias can change after creation
   * ({@link MoeRouter#expertBias()} gives the one in use).
   *
   * @return a copy [E], or null when none was set
   */
  public float[] expertBias() {
    return expertBias == null ? null : expertBias.clone();
  }

  /**
   * Whether an expert bias was set (selection then ranks by R = S + b, else by the logit).
   *
   * @return true when {@link #expertBias()} is not null
   */
  public boolean hasExpertBias() {
    return expertBias != null;
  }

  float[] expertBiasUnsafe() {
    return expertBias;
  }

  /**
   * Whether this score function takes an expert bias: sigmoid, sqrtsoftplus, or softmax pre (R = P + b).
   *
   * @return false only for softmax post
   */
  public boolean acceptsExpertBias() {
    return scoreFunction != ScoreFunction.SOFTMAX || preSoftmax;
  }

  /**
   * Number of expert groups (contiguous blocks of E / groups experts) for group-limited routing.
   *
   * @return the configured count; 0 when none was set
   */
  public int groups() {
    return groups;
  }

  /**
   * Groups kept per token for group-limited routing.
   *
   * @return the configured count; 0 when none was set
   */
  public int groupTopK() {
    return groupTopK;
  }

  /**
   * Whether selection is limited to the best groups: more than one group, and fewer kept than there are.
   * {@code groups(g, g)} and {@code groups(1, 1)} are valid but select as ungrouped routing does.
   *
   * @return true when {@code groups > 1} and {@code 0 < groupTopK < groups}
   */
  public boolean grouped() {
    return groups > 1 && groupTopK > 0 && groupTopK < groups;
  }

  /**
   * How a group is scored for group-limited routing (docs/semantics.md section 2).
   *
   * @return TOPK_SUM (the default), TOP2_SUM or MAX
   */
  public GroupScore groupScore() {
    return groupScore;
  }

  /**
   * The routed scaling factor applied to the weights after normalisation.
   *
   * @return a finite factor {@code > 0}; 1 by default
   */
  public float scale() {
    return scale;
  }

  /**
   * Whether the k weights are renormalised to sum 1 (docs/semantics.md section 3).
   *
   * @return the explicit setting, else true for sigmoid and sqrtsoftplus and false for softmax pre; true for
   *     softmax post (by construction). With k = 1 it has no effect (a single weight is never normalised)
   */
  public boolean normalize() {
    if (normalize != null) return normalize;
    return scoreFunction != ScoreFunction.SOFTMAX || !preSoftmax;
  }

  /**
   * The explicit {@link Builder#normalize} setting, as opposed to the effective {@link #normalize()}.
   *
   * @return TRUE or FALSE when set, or null when the spec default applies
   */
  public Boolean normalizeSetting() {
    return normalize;
  }

  /**
   * What calls do with rows whose read logits are NaN or infinite (docs/semantics.md section 2).
   *
   * @return PROPAGATE (the default), ZERO or ERROR
   */
  public NonFinitePolicy nonFinite() {
    return nonFinite;
  }

  /**
   * What replay does with rows that are all -1 (docs/semantics.md section 4).
   *
   * @return REJECT (the default), LIVE or ARANGE
   */
  public MinusOneRows minusOneRows() {
    return minusOneRows;
  }

  /** moe_normalize code: 0 default, 1 on, 2 off. */
  int normalizeCode() {
    return normalize == null ? 0 : normalize ? 1 : 2;
  }

  /**
   * A builder starting from this configuration, for a variant of it.
   *
   * @return a new builder holding every setting of this configuration (explicit normalize included)
   */
  public Builder toBuilder() {
    Builder b = new Builder(experts, topK).scoreFunction(scoreFunction).preSoftmax(preSoftmax).scale(scale)
        .groupScore(groupScore).nonFinite(nonFinite).minusOneRows(minusOneRows);
    b.expertBias = expertBias == null ? null : expertBias.clone();
    b.groups = groups;
    b.groupTopK = groupTopK;
    b.normalize = normalize;
    return b;
  }

  /**
   * This configuration with another expert bias, checked as {@link Builder#build()} checks it. For a running
   * router, {@link MoeRouter#setExpertBias} changes the bias without a new router.
   *
   * @param bias the new bias [E], or null for none; copied
   * @return a new configuration
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} as {@link Builder#build()}
   */
  public RouterConfig withExpertBias(float[] bias) {
    return toBuilder().expertBias(bias).build();
  }

  @Override
  public boolean equals(Object o) {
    if (!(o instanceof RouterConfig)) return false;
    RouterConfig c = (RouterConfig) o;
    return experts == c.experts && topK == c.topK && scoreFunction == c.scoreFunction
        && preSoftmax == c.preSoftmax && groups == c.groups && groupTopK == c.groupTopK
        && Float.compare(scale, c.scale) == 0 && Arrays.equals(expertBias, c.expertBias)
        && normalize() == c.normalize() && groupScore == c.groupScore && nonFinite == c.nonFinite
        && minusOneRows == c.minusOneRows;
  }

  @Override
  public int hashCode() {
    return Objects.hash(experts, topK, scoreFunction, preSoftmax, groups, groupTopK, scale, normalize(), groupScore,
        nonFinite, minusOneRows) * 31 + Arrays.hashCode(expertBias);
  }

  @Override
  public String toString() {
    StringBuilder s = new StringBuilder("RouterConfig{experts=").append(experts).append(", topK=").append(topK)
        .append(", score=").append(scoreFunction.name().toLowerCase());
    if (preSoftmax) s.append(", preSoftmax");
    if (expertBias != null) s.append(", expertBias");
    if (normalize != null) s.append(", normalize=").append(normalize);
    if (grouped()) s.append(", groups=").append(groups).append(", groupTopK=").append(groupTopK);
    if (groupScore != GroupScore.TOPK_SUM) s.append(", groupScore=").append(groupScore);
    if (scale != 1f) s.append(", scale=").append(scale);
    if (nonFinite != NonFinitePolicy.PROPAGATE) s.append(", nonFinite=").append(nonFinite);
    if (minusOneRows != MinusOneRows.REJECT) s.append(", minusOneRows=").append(minusOneRows);
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
    private Boolean normalize;
    private GroupScore groupScore = GroupScore.TOPK_SUM;
    private NonFinitePolicy nonFinite = NonFinitePolicy.PROPAGATE;
    private MinusOneRows minusOneRows = MinusOneRows.REJECT;

    private Builder(int experts, int topK) {
      this.experts = experts;
      this.topK = topK;
    }

    /**
     * The score function S = f(logits) (default SOFTMAX).
     *
     * @param f SOFTMAX, SIGMOID (DeepSeek-V3) or SQRTSOFTPLUS (DeepSeek-V4)
     * @return this builder
     * @throws NullPointerException when f is null
     */
    public Builder scoreFunction(ScoreFunction f) {
      this.scoreFunction = Objects.requireNonNull(f, "scoreFunction");
      return this;
    }

    /**
     * Softmax over all experts before top-k (DeepSeek-V2 style; not renormalised unless {@link #normalize}).
     * Softmax only.
     *
     * @param pre true for softmax pre, false for softmax post (the default)
     * @return this builder
     */
    public Builder preSoftmax(boolean pre) {
      this.preSoftmax = pre;
      return this;
    }

    /**
     * Expert bias added to the scores for selection only (R = S + b, or P + b with softmax pre); never the
     * weights. With a bias experts are ranked by R, without one by the logit.
     *
     * @param bias [experts], every entry finite; copied; null for none (the default)
     * @return this builder
     */
    public Builder expertBias(float[] bias) {
      this.expertBias = bias == null ? null : bias.clone();
      return this;
    }

    /**
     * Group-limited routing: {@code groups} contiguous groups of E / groups experts, keep the best
     * {@code groupTopK}, then select the k experts within them (docs/semantics.md section 2).
     *
     * @param groups number of groups, in {@code [1, MAX_GROUPS]}, dividing E; 0 with groupTopK 0 for none
     * @param groupTopK groups kept, in {@code [1, groups]}, holding at least k experts
     * @return this builder
     */
    public Builder groups(int groups, int groupTopK) {
      this.groups = groups;
      this.groupTopK = groupTopK;
      return this;
    }

    /**
     * How a group is scored (default {@link GroupScore#TOPK_SUM}); other values need {@link #groups}.
     *
     * @param g TOPK_SUM, TOP2_SUM or MAX
     * @return this builder
     * @throws NullPointerException when g is null
     */
    public Builder groupScore(GroupScore g) {
      this.groupScore = Objects.requireNonNull(g, "groupScore");
      return this;
    }

    /**
     * Multiplies the weights (routed scaling factor), after normalisation (default 1).
     *
     * @param scale finite and {@code > 0}
     * @return this builder
     */
    public Builder scale(float scale) {
      this.scale = scale;
      return this;
    }

    /**
     * Renormalise the k weights, {@code w = u / (sum(u) + 1e-20)} (vLLM/SGLang {@code renormalize}).
     * Unset: true for sigmoid and sqrtsoftplus, false for softmax pre. Softmax post rejects false.
     *
     * @param normalize the explicit setting
     * @return this builder
     */
    public Builder normalize(boolean normalize) {
      this.normalize = normalize;
      return this;
    }

    /**
     * Back to the spec default of {@link #normalize}.
     *
     * @return this builder
     */
    public Builder normalizeDefault() {
      this.normalize = null;
      return this;
    }

    /**
     * What a call does with rows whose read logits are NaN or infinite (default PROPAGATE).
     *
     * @param policy PROPAGATE, ZERO or ERROR
     * @return this builder
     * @throws NullPointerException when policy is null
     */
    public Builder nonFinite(NonFinitePolicy policy) {
      this.nonFinite = Objects.requireNonNull(policy, "nonFinite");
      return this;
    }

    /**
     * What replay does with all -1 rows (default REJECT); honoured by every replay path.
     *
     * @param policy REJECT, LIVE or ARANGE
     * @return this builder
     * @throws NullPointerException when policy is null
     */
    public Builder minusOneRows(MinusOneRows policy) {
      this.minusOneRows = Objects.requireNonNull(policy, "minusOneRows");
      return this;
    }

    /**
     * Checks every rule and builds; the same rules, order and messages as {@code moe_config_validate}
     * (moe_api.cpp), so a configuration accepted here is accepted by the native backends.
     *
     * @return the immutable configuration (the bias array copied)
     * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} naming the first rule broken and the value:
     *     E or k out of range or k &gt; E, pre-softmax without softmax, normalize false on softmax post, a bias
     *     on softmax post, of the wrong length or not finite, a scale that is not finite and positive, groups
     *     that do not divide E or keep fewer than k experts, a group score the shape cannot use or without
     *     groups
     */
    public RouterConfig build() {
      if (experts < 1 || experts > MAX_EXPERTS)
        throw invalid("experts must be in [1, " + MAX_EXPERTS + "], got " + experts);
      if (topK < 1 || topK > MAX_TOP_K) throw invalid("topK must be in [1, " + MAX_TOP_K + "], got " + topK);
      if (topK > experts)
        throw invalid("topK (" + topK + ") exceeds the number of experts (" + experts + ")");
      if (preSoftmax && scoreFunction != ScoreFunction.SOFTMAX)
        throw invalid("pre-softmax applies to the softmax score function only");
      if (Boolean.FALSE.equals(normalize) && scoreFunction == ScoreFunction.SOFTMAX && !preSoftmax)
        throw invalid("normalize=false needs pre-softmax: softmax post is normalised by construction");
      if (expertBias != null) {
        if (scoreFunction == ScoreFunction.SOFTMAX && !preSoftmax)
          throw invalid("expert bias with the softmax score function needs pre-softmax (R = P + b)");
        if (expertBias.length != experts)
          throw invalid("expert bias has " + expertBias.length + " entries, expected " + experts);
      }
      if (!(scale > 0f) || !Float.isFinite(scale)) throw invalid("scale must be finite and > 0, got " + gFormat(scale));
      if (groups < 0 || groupTopK < 0)
        throw invalid("groups (" + groups + ") and group topK (" + groupTopK + ") must be >= 0");
      if (groups > 1 || groupTopK > 0) {
        if (groups < 1 || groups > MAX_GROUPS)
          throw invalid("groups must be in [1, " + MAX_GROUPS + "], got " + groups);
        if (experts % groups != 0)
          throw invalid("experts (" + experts + ") not divisible by groups (" + groups + ")");
        if (groupTopK < 1 || groupTopK > groups)
          throw invalid("group topK must be in [1, groups=" + groups + "], got " + groupTopK);
        if (groupTopK * (experts / groups) < topK)
          throw invalid("the " + groupTopK + " kept groups of " + experts / groups
              + " experts hold fewer experts than topK (" + topK + ")");
        if (groupScore == GroupScore.TOPK_SUM && topK / groupTopK < 1)
          throw invalid("TOPK_SUM sums the top floor(topK / groupTopK) scores of a group, which is 0 for topK "
              + topK + " and groupTopK " + groupTopK + " (use TOP2_SUM or MAX)");
        if (groupScore == GroupScore.TOP2_SUM && experts / groups < 2)
          throw invalid("TOP2_SUM needs at least 2 experts per group, got " + experts / groups);
      } else if (groupScore != GroupScore.TOPK_SUM) {
        throw invalid("group score " + groupScore + " applies to group-limited routing only (no groups set)");
      }
      if (expertBias != null)
        for (int i = 0; i < experts; i++)
          if (!Float.isFinite(expertBias[i])) throw invalid("expert bias[" + i + "] is not finite");
      return new RouterConfig(this);
    }

    /** C's %g for the values a scale check can see (0, negatives, NaN, infinities, ordinary floats). */
    static String gFormat(double v) {
      if (Double.isNaN(v)) return "nan";
      if (Double.isInfinite(v)) return v > 0 ? "inf" : "-inf";
      String s = String.format(java.util.Locale.ROOT, "%g", (double) v);
      // %g in Java keeps trailing zeros and never switches to the shortest form; trim like C does.
      if (s.contains("e")) {
        String[] parts = s.split("e");
        String m = parts[0].contains(".") ? parts[0].replaceAll("0+$", "").replaceAll("\\.$", "") : parts[0];
        int exp = Integer.parseInt(parts[1]);
        return m + "e" + (exp < 0 ? "-" : "+") + (Math.abs(exp) < 10 ? "0" : "") + Math.abs(exp);
      }
      return s.contains(".") ? s.replaceAll("0+$", "").replaceAll("\\.$", "") : s;
    }

    private static MoeRouterException invalid(String message) {
      return new MoeRouterException(Status.INVALID_ARGUMENT, "invalid router config: " + message);
    }
  }
}
