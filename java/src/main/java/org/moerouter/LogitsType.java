// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * Element type of the logits [tokens, E] a call reads. Every type is widened to float32 exactly before any
 * arithmetic (docs/semantics.md, notation), so the three give the same routing for the same values.
 *
 * <p>Trap: BF16 and FP16 travel as raw 16-bit patterns in a {@code short[]} (or a buffer, address or segment
 * of 16-bit elements), not as converted numbers: {@code (short) 1.5f} is not a bf16 value. Codes mirror
 * {@code moe_dtype} in {@code moe_router.h}.
 */
public enum LogitsType {
  /** IEEE binary32, {@code float[]}. */
  FP32(0, 4),
  /** bfloat16 (the upper 16 bits of a float32), raw bits in a {@code short[]}. */
  BF16(1, 2),
  /** IEEE binary16 (half), raw bits in a {@code short[]}; subnormals, infinities and NaN are widened exactly. */
  FP16(2, 2);

  final int code;
  private final int bytes;

  LogitsType(int code, int bytes) {
    this.code = code;
    this.bytes = bytes;
  }

  /**
   * Size of one element.
   *
   * @return bytes per logit: 4 for FP32, 2 for BF16 and FP16
   */
  public int bytes() {
    return bytes;
  }
}
