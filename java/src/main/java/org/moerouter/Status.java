// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * Outcome codes of the native C ABI ({@code moe_status} in {@code native/include/moe_router.h}), also used by
 * the Java backend, so an error carries the same status whichever backend raised it. Every
 * {@link MoeRouterException} carries one; {@link #OK} never appears in an exception.
 *
 * <p>Codes and descriptions must stay identical to {@code moe_status} and {@code moe_status_string}
 * ({@code RoutingOptionsTest.statusTextsMatchTheNativeOnes} compares them for every code).
 */
public enum Status {
  /** Success (code 0); never carried by an exception. */
  OK(0, "ok"),
  /** Bad configuration, shape, dtype, array length, buffer order or null argument. */
  INVALID_ARGUMENT(1, "invalid argument"),
  /** Replay or backward indices out of range, repeated within a row, or -1 where the policy rejects it. */
  INVALID_REPLAY(2, "invalid replay indices"),
  /** The backend or the feature is not available in this build or on this router (for example no CUDA kernels). */
  UNSUPPORTED(3, "unsupported"),
  /** CUDA is compiled in, but no usable device is visible. */
  NO_DEVICE(4, "no CUDA device"),
  /** A CUDA runtime call failed; the message names the call. */
  CUDA_ERROR(5, "CUDA error"),
  /** A host or device allocation failed. */
  OUT_OF_MEMORY(6, "out of memory"),
  /** A broken invariant inside the library: a bug to report. */
  INTERNAL(7, "internal error"),
  /** Non-finite policy ERROR: a logit the call reads is NaN or +-inf. */
  NONFINITE(8, "non-finite logits"),
  /** A code this version does not know (a newer native library than these classes). */
  UNKNOWN(-1, "unknown status");

  private final int code;
  private final String description;

  Status(int code, String description) {
    this.code = code;
    this.description = description;
  }

  /**
   * The C ABI's value of this status.
   *
   * @return the {@code moe_status} code; -1 for {@link #UNKNOWN}
   */
  public int code() {
    return code;
  }

  /**
   * A short lower-case description, as {@code moe_status_string} gives it.
   *
   * @return for example "invalid replay indices"
   */
  public String description() {
    return description;
  }

  /**
   * The status of a C ABI code.
   *
   * @param code a {@code moe_status} value
   * @return its status, or {@link #UNKNOWN} for a code this version does not define (never null)
   */
  public static Status fromCode(int code) {
    for (Status s : values()) if (s.code == code) return s;
    return UNKNOWN;
  }
}
