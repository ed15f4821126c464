// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * What replay does with rows of -1, the padding rows of slime and miles traces (ROUTING_SPEC.md section 4).
 * A row mixing -1 and experts is always rejected; rows that are not all -1 are validated as usual.
 */
public enum MinusOneRows {
  /** Reject an all-(-1) row like any other invalid row (default). */
  REJECT,
  /** Route an all-(-1) row live, as if its replay mask were 0. */
  LIVE,
  /** Replay an all-(-1) row as experts {@code 0 .. k-1} (miles {@code _get_replay_result}). */
  ARANGE
}
