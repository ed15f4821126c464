// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/** Outcome codes of the native C ABI ({@code moe_status}), also used by the Java backend. */
public enum Status {
  OK(0, "ok"),
  INVALID_ARGUMENT(1, "invalid argument"),
  INVALID_REPLAY(2, "invalid replay indices"),
  UNSUPPORTED(3, "unsupported"),
  NO_DEVICE(4, "no CUDA device"),
  CUDA_ERROR(5, "CUDA error"),
  OUT_OF_MEMORY(6, "out of memory"),
  INTERNAL(7, "internal error"),
  /** Non-finite policy ERROR: a logit the call reads is NaN or +-inf. */
  NONFINITE(8, "non-finite logits"),
  UNKNOWN(-1, "unknown status");

  private final int code;
  private final String description;

  Status(int code, String description) {
    this.code = code;
    this.description = description;
  }

  public int code() {
    return code;
  }

  public String description() {
    return description;
  }

  public static Status fromCode(int code) {
    for (Status s : values()) if (s.code == code) return s;
    return UNKNOWN;
  }
}
