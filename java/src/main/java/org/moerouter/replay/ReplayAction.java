// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

/** What a MoE layer does with routing on the next call (docs/semantics.md section 7). */
public enum ReplayAction {
  /** Route live; nothing is recorded or replayed. */
  NONE,
  /** Route live and keep the selected indices ({@link RecordMode}). */
  RECORD,
  /**
   * Replay the layer's target indices without consuming them: a log-prob pass and the training pass reuse
   * the same target. Under {@link BackwardQueue#ON_FORWARD} each use also queues the target for backward.
   */
  REPLAY_FORWARD,
  /** Activation recompute during backward: pop the backward FIFO's front entry and replay it. */
  REPLAY_BACKWARD
}
