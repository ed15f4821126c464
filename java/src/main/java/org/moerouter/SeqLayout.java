// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * How the T = Sq * B rows of a call form B sequences of length Sq, for the sequence aux loss
 * (docs/semantics.md section 6). Codes mirror moe_seq_layout in moe_router.h.
 */
public enum SeqLayout {
  /** Row {@code t = s * B + b}: Megatron's {@code [seq, batch]} (default). */
  SB(0),
  /** Row {@code t = b * Sq + s}: HF DeepSeek's {@code [batch, seq]}. */
  BS(1);

  final int code;

  SeqLayout(int code) {
    this.code = code;
  }
}
