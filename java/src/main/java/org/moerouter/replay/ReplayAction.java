package org.moerouter.replay;

/** What a MoE layer does with routing on the next call (ROUTING_SPEC.md section 7). */
public enum ReplayAction {
  /** Route live; nothing is recorded or replayed. */
  NONE,
  /** Route live and copy the selected indices into the layer's recording buffer. */
  RECORD,
  /** Use the indices set for the current micro-batch and queue them for the backward recompute. */
  REPLAY_FORWARD,
  /** Activation recompute during backward: take the queued indices in FIFO order. */
  REPLAY_BACKWARD
}
