// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * What replay does with rows of -1, the padding rows of slime and miles traces (docs/semantics.md section 4).
 * A row mixing -1 and experts is always rejected; rows that are not all -1 are validated as usual. A router
 * option ({@link RouterConfig.Builder#minusOneRows}, honoured by every replay path) and a replay-registry
 * option. Codes mirror moe_minus_one_rows in moe_router.h.
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
