// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * Which routed tokens an expert keeps when it has more than its capacity (docs/semantics.md section 6,
 * Megatron {@code moe_token_drop_policy}). Ties go to the lower token index. Codes mirror moe_drop_policy.
 */
public enum DropPolicy {
  /** The largest routing probs (a token not routed to the expert has prob 0; NaN ranks below every number). */
  PROBS(0),
  /** Routed tokens first, lowest token index first. */
  POSITION(1);

  final int code;

  DropPolicy(int code) {
    this.code = code;
  }
}
