// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

import org.moerouter.MoeRouterException;
import org.moerouter.Status;

/**
 * Replay data or bookkeeping went wrong: target indices of the wrong shape or with an invalid row, no
 * target for a replayed layer, an empty backward queue, a recording buffer too small, queued entries never
 * popped. Status {@link Status#INVALID_REPLAY}; {@link #layer()} names the first offending layer (null when
 * no single layer is at fault, for example a wrong number of arrays for the whole model).
 *
 * <p>The layer is not serialised: a deserialised exception has a null {@link #layer()} and keeps the message.
 */
public class ReplayStateException extends MoeRouterException {
  private static final long serialVersionUID = 1L;
  private final transient LayerKey layer;

  /**
   * An error about one layer, or about the whole registry.
   *
   * @param layer the layer at fault, or null when no single layer is
   * @param message what went wrong; it should name the layer
   */
  public ReplayStateException(LayerKey layer, String message) {
    super(Status.INVALID_REPLAY, message);
    this.layer = layer;
  }

  /**
   * The first offending layer.
   *
   * @return the layer at fault, or null when no single layer is (for example a wrong number of arrays)
   */
  public LayerKey layer() {
    return layer;
  }
}
