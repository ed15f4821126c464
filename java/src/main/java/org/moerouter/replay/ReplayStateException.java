// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

import org.moerouter.MoeRouterException;
import org.moerouter.Status;

/**
 * Replay data or bookkeeping went wrong: target indices of the wrong shape or with an invalid row, no
 * target for a replayed layer, an empty backward queue, a recording buffer too small, queued entries never
 * popped. Status {@link Status#INVALID_REPLAY}; {@link #layer()} names the first offending layer (null when
 * no single layer is at fault, for example a wrong number of arrays for the whole model).
 */
public class ReplayStateException extends MoeRouterException {
  private static final long serialVersionUID = 1L;
  private final transient LayerKey layer;

  /** An error about {@code layer} (nullable); the message should name it. */
  public ReplayStateException(LayerKey layer, String message) {
    super(Status.INVALID_REPLAY, message);
    this.layer = layer;
  }

  /** The layer at fault, or null. */
  public LayerKey layer() {
    return layer;
  }
}
