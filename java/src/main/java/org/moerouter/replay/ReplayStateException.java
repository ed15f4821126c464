package org.moerouter.replay;

import org.moerouter.MoeRouterException;
import org.moerouter.Status;

/**
 * Replay bookkeeping went wrong: no indices set for a replayed micro-batch, queued indices never
 * consumed, a token count that does not match, a recording buffer that is full. Status
 * {@link Status#INVALID_REPLAY}; {@link #layerId()} and {@link #microBatch()} name the first offender
 * ({@code -1} for the micro-batch when none applies).
 */
public class ReplayStateException extends MoeRouterException {
  private static final long serialVersionUID = 1L;
  private final int layerId;
  private final int microBatch;

  public ReplayStateException(int layerId, int microBatch, String message) {
    super(Status.INVALID_REPLAY, message);
    this.layerId = layerId;
    this.microBatch = microBatch;
  }

  public int layerId() {
    return layerId;
  }

  public int microBatch() {
    return microBatch;
  }
}
