// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

/** What {@link ReplayAction#RECORD} keeps (docs/semantics.md section 7). */
public enum RecordMode {
  /**
   * The latest call's indices only (Megatron {@code record_indices} overwrites; with a static buffer it
   * copies into rows {@code [0, T)}); default.
   */
  LATEST,
  /** Every call's indices, in call order (slime and miles {@code Replay.record} append to a list). */
  APPEND
}
