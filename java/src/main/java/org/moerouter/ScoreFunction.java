// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * How router logits become scores (docs/semantics.md section 1); codes mirror {@code moe_score_fn} in
 * {@code moe_router.h}. Set with {@link RouterConfig.Builder#scoreFunction}; the default is {@link #SOFTMAX}.
 *
 * <p>Traps: an expert bias needs a score to add to, so {@link #SOFTMAX} takes one only with pre-softmax; and
 * the weights of {@link #SIGMOID} and {@link #SQRTSOFTPLUS} are renormalised by default (section 3), those of
 * softmax pre are not.
 */
public enum ScoreFunction {
  /** Softmax: over the k selected logits (post, default) or over all experts (pre-softmax). */
  SOFTMAX(0),
  /** {@code S = sigmoid(L)} (DeepSeek-V3, GLM-4.5, Llama-4 with k = 1). */
  SIGMOID(1),
  /** {@code S = sqrt(softplus(L))}, softplus(x) = x above 20 (DeepSeek-V4, Megatron / TE {@code sqrtsoftplus}). */
  SQRTSOFTPLUS(2);

  final int code;

  ScoreFunction(int code) {
    this.code = code;
  }
}
