// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * How a group of experts is scored in group-limited routing (docs/semantics.md section 2), always from
 * the routing scores R (bias included). Codes mirror moe_group_score in moe_router.h.
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
