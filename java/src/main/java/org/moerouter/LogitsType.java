// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/** Element type of the logits; BF16 and FP16 travel as raw 16-bit values ({@code short}). */
public enum LogitsType {
  FP32(0, 4),
  BF16(1, 2),
  FP16(2, 2);

  final int code;
  private final int bytes;

  LogitsType(int code, int bytes) {
    this.code = code;
    this.bytes = bytes;
  }

  public int bytes() {
    return bytes;
  }
}
