// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * What a call does with a row whose read logits hold NaN or +-inf (docs/semantics.md section 2). Live
 * routing reads the whole row; replay reads the k replayed logits, or the whole row for softmax pre.
 * Codes mirror moe_nonfinite in moe_router.h.
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
