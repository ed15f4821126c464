// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

/**
 * When a layer's backward FIFO (what {@link ReplayAction#REPLAY_BACKWARD} pops) is filled
 * (docs/semantics.md section 7). Both agree when every set is followed by exactly one forward.
 */
public enum BackwardQueue {
  /** Once per {@code setTargetIndices}, at set time (Megatron {@code RouterReplay.set_target_indices}); default. */
  ON_SET,
  /** Once per {@link ReplayAction#REPLAY_FORWARD} use of the target (this library's earlier behaviour). */
  ON_FORWARD
}
