// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * What a call does with a row whose read logits hold NaN or +-inf (docs/semantics.md section 2). Live
 * routing reads the whole row; replay reads the k replayed logits, or the whole row for softmax pre.
 * Codes mirror {@code moe_nonfinite} in {@code moe_router.h}; set with {@link RouterConfig.Builder#nonFinite}.
 *
 * <p>Trap: under {@link #ZERO} the backward needs the forward's per-row flags
 * ({@link RoutingResult#nonfiniteRowFlags()}, or the {@code outNonfiniteRows} array of a routing call): a
 * live row that read a NaN anywhere in its row must get a zero gradient, which the indices alone do not tell.
 */
public enum NonFinitePolicy {
  /** Default: the row gets k distinct experts, is counted, and its weights may be NaN. */
  PROPAGATE(0),
  /** As PROPAGATE, but the row's weights and logit gradients are 0 (section 6 treats it as padding). */
  ZERO(1),
  /** The call is rejected ({@link Status#NONFINITE}) naming the first such row; nothing is written. */
  ERROR(2);

  final int code;

  NonFinitePolicy(int code) {
    this.code = code;
  }
}
