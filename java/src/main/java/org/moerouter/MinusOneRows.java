// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * What replay does with rows of -1, the padding rows of slime and miles traces (docs/semantics.md section 4).
 * A row mixing -1 and experts is always rejected; rows that are not all -1 are validated as usual. A router
 * option ({@link RouterConfig.Builder#minusOneRows}, honoured by every replay path) and a replay-registry
 * option ({@code ReplayRegistry.Builder#minusOneRows}). Codes mirror {@code moe_minus_one_rows} in
 * {@code moe_router.h}.
 *
 * <p>Trap: the backward takes the indices the forward wrote ({@code outIdx}), never the replayed array with
 * its -1 rows: under {@link #LIVE} and {@link #ARANGE} only the output says which experts a row used.
 */
public enum MinusOneRows {
  /** Reject an all-(-1) row like any other invalid row (default). */
  REJECT(0),
  /** Route an all-(-1) row live, as if its replay mask were 0. */
  LIVE(1),
  /** Replay an all-(-1) row as experts {@code 0 .. k-1} (miles {@code _get_replay_result}). */
  ARANGE(2);

  final int code;

  MinusOneRows(int code) {
    this.code = code;
  }
}
