// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * The one exception type of moe-router: a rejected input or a failed call, on every backend. Unchecked.
 *
 * <p>The message names the operation, the rule and the value ("replay failed: row 3: expert 17 at position
 * 1 is out of range [0, 16)"); {@link #status()} gives the category, the same code the native library
 * returns ({@link Status}). Inputs are validated before any output is written, so a call that throws this
 * has left its output arrays untouched, except where a method says otherwise. A call on a closed router
 * throws {@link IllegalStateException} instead.
 *
 * <p>Subclasses: {@code org.moerouter.replay.ReplayStateException} (replay bookkeeping) and
 * {@code org.moerouter.trace.TraceFormatException} (malformed files).
 */
public class MoeRouterException extends RuntimeException {
  private static final long serialVersionUID = 1L;
  /** The category of the failure; part of the serialised form. */
  private final Status status;

  /**
   * An exception with a status and a message.
   *
   * @param status the category (not {@link Status#OK})
   * @param message what failed: the operation, the rule and the value
   */
  public MoeRouterException(Status status, String message) {
    super(message);
    this.status = status;
  }

  /**
   * An exception with a status, a message and the exception that caused it.
   *
   * @param status the category (not {@link Status#OK})
   * @param message what failed: the operation, the rule and the value
   * @param cause the underlying exception, or null
   */
  public MoeRouterException(Status status, String message, Throwable cause) {
    super(message, cause);
    this.status = status;
  }

  /**
   * The category of the failure.
   *
   * @return the status, as the native library would have returned it
   */
  public Status status() {
    return status;
  }
}
