// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * How a group of experts is scored in group-limited routing (docs/semantics.md section 2), always from
 * the routing scores R (bias included). Codes mirror {@code moe_group_score} in {@code moe_router.h}.
 *
 * <pre>{@code
 * RouterConfig v3 = RouterConfig.builder(256, 8).scoreFunction(ScoreFunction.SIGMOID).expertBias(bias)
 *     .groups(8, 4).groupScore(GroupScore.TOP2_SUM).build();   // DeepSeek-V3
 * }</pre>
 *
 * <p>Traps: a group score other than the default needs {@link RouterConfig.Builder#groups}; {@link #TOPK_SUM}
 * needs {@code k >= groupTopK} (it sums {@code floor(k / groupTopK)} values), {@link #TOP2_SUM} two experts per
 * group. {@link RouterConfig.Builder#build()} rejects the rest, naming the rule.
 */
public enum GroupScore {
  /** Sum of the top {@code floor(k / groupTopK)} values (default; Megatron, TransformerEngine). */
  TOPK_SUM(0),
  /** Sum of the top 2 values (DeepSeek-V3 / vLLM / SGLang with a correction bias). */
  TOP2_SUM(1),
  /** The largest value (DeepSeek-V2; vLLM / SGLang grouped top-k without bias). */
  MAX(2);

  final int code;

  GroupScore(int code) {
    this.code = code;
  }
}
