// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import org.moerouter.MoeRouterException;
import org.moerouter.Status;

/**
 * A routing trace, safetensors or {@code .npy} file is malformed: truncated, corrupt (checksum
 * mismatch), inconsistent with its own metadata (dtype, shape, E, k, layer count) or holding an expert
 * index outside {@code [0, E)} or repeated within a row. The message names the file (when known) and
 * the first offending field, sample, token or layer.
 *
 * <p>Error policy of {@code org.moerouter.trace}: failures of the file system (missing file, full
 * disk, permission) are {@link java.io.IOException}s; a file that was read but cannot be a valid trace
 * is a {@code TraceFormatException} (unchecked, status {@link Status#INVALID_ARGUMENT}); invalid
 * arguments from the caller (bad ranges, bad indices given to a builder) are plain
 * {@link MoeRouterException}s with status {@link Status#INVALID_ARGUMENT}. No other exception type
 * escapes a read, whatever the bytes of the file.
 */
public class TraceFormatException extends MoeRouterException {
  private static final long serialVersionUID = 1L;

  /**
   * A malformed file.
   *
   * @param message the file (when known) and the first offending field, sample, token or layer
   */
  public TraceFormatException(String message) {
    super(Status.INVALID_ARGUMENT, message);
  }

  /**
   * A malformed file, with the exception that revealed it.
   *
   * @param message the file (when known) and the first offending field, sample, token or layer
   * @param cause the underlying exception
   */
  public TraceFormatException(String message, Throwable cause) {
    super(Status.INVALID_ARGUMENT, message, cause);
  }
}
