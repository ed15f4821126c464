// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

import java.util.List;

/**
 * A region in which replay is suspended (every covered layer routes live, action {@link ReplayAction#NONE});
 * {@link #close()} restores each layer's previous action, also when the region throws. Nests; closing twice
 * is a no-op. Created by {@link ReplayRegistry#suspend()} (every layer) or {@link RouterReplay#suspend()}.
 *
 * <p>Trap: an action set inside the region is overwritten when it closes; suspensions must close in the
 * reverse order of their creation (try-with-resources does this), or a layer ends with an inner region's
 * saved action.
 *
 * <pre>{@code
 * try (Suspension s = registry.suspend()) {
 *   buildMtpLayers();      // no recorded routing for these
 * }                        // previous actions restored
 * }</pre>
 */
public final class Suspension implements AutoCloseable {
  private final List<RouterReplay> layers;
  private final ReplayAction[] saved;
  private boolean closed;

  Suspension(List<RouterReplay> layers) {
    this.layers = List.copyOf(layers);
    this.saved = new ReplayAction[this.layers.size()];
    for (int i = 0; i < saved.length; i++) {
      RouterReplay l = this.layers.get(i);
      saved[i] = l.action();
      l.forceAction(ReplayAction.NONE);
    }
  }

  /**
   * Whether the suspension has ended.
   *
   * @return true once {@link #close()} has run
   */
  public boolean isClosed() {
    return closed;
  }

  /** Restores the actions the layers had when the suspension began. */
  @Override
  public void close() {
    if (closed) return;
    closed = true;
    for (int i = 0; i < saved.length; i++) layers.get(i).forceAction(saved[i]);
  }
}
