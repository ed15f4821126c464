package org.moerouter.replay;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.moerouter.MoeRouterException;
import org.moerouter.Status;

/**
 * The per-layer replay states of one model (no global state: each model owns its registry).
 *
 * <pre>{@code
 * ReplayRegistry replay = new ReplayRegistry();
 * for (int id : moeLayerIds) replay.addLayer(id);
 * replay.addLayer(mtpLayerId, true);                         // multi-token prediction: never replayed
 *
 * replay.setAction(ReplayAction.REPLAY_FORWARD);
 * for (int mb = 0; mb < microBatches; mb++) {
 *   replay.setTargets(mb, tokens, layerIds, indices, mask);  // [tokens, layers, k] from a trace
 *   model.forward(mb);                                       // each layer: replay.layer(id).route(router, ...)
 * }
 * replay.setAction(ReplayAction.REPLAY_BACKWARD);            // recompute in backward: FIFO
 * ...
 * replay.checkAllConsumed();                                 // names layer and micro-batch otherwise
 * }</pre>
 *
 * Not thread-safe (see {@link RouterReplay}).
 */
public final class ReplayRegistry {
  private final Map<Integer, RouterReplay> layers = new LinkedHashMap<>();

  /** Adds a replayable layer. */
  public RouterReplay addLayer(int layerId) {
    return addLayer(layerId, false);
  }

  /** Adds a layer; {@code neverReplay} for layers without recorded routing (multi-token prediction). */
  public RouterReplay addLayer(int layerId, boolean neverReplay) {
    if (layers.containsKey(layerId)) throw invalid("layer " + layerId + " is already registered");
    RouterReplay r = new RouterReplay(layerId, neverReplay);
    layers.put(layerId, r);
    return r;
  }

  public RouterReplay layer(int layerId) {
    RouterReplay r = layers.get(layerId);
    if (r == null) throw invalid("layer " + layerId + " is not registered (layers: " + layers.keySet() + ")");
    return r;
  }

  public boolean hasLayer(int layerId) {
    return layers.containsKey(layerId);
  }

  /** Every layer, in registration order. */
  public List<RouterReplay> layers() {
    return Collections.unmodifiableList(new ArrayList<>(layers.values()));
  }

  /** Sets the action of every replayable layer (never-replay layers stay {@link ReplayAction#NONE}). */
  public void setAction(ReplayAction action) {
    Objects.requireNonNull(action, "action");
    for (RouterReplay r : layers.values()) if (!r.neverReplay()) r.setAction(action);
  }

  /** Sets one layer's indices [tokens, k] for a micro-batch; see {@link RouterReplay#setTarget}. */
  public void setTarget(int layerId, int microBatch, int[] indices, byte[] mask, int tokens) {
    layer(layerId).setTarget(microBatch, indices, mask, tokens);
  }

  /**
   * Sets the indices of several layers at once from the trace layout [tokens, layers, k]
   * ({@code layerIds[i]} is the registry layer of position i). Each layer gets its own [tokens, k] copy;
   * the mask [tokens] (nullable) is shared. Nothing is set if any layer is unknown or never-replay.
   */
  public void setTargets(int microBatch, int tokens, int[] layerIds, int[] indices, byte[] mask) {
    Objects.requireNonNull(layerIds, "layerIds");
    Objects.requireNonNull(indices, "indices");
    int nl = layerIds.length;
    if (tokens < 0 || nl == 0) throw invalid("need tokens >= 0 and at least one layer");
    long rows = (long) tokens * nl;
    if (rows == 0 || indices.length % rows != 0)
      throw invalid("indices hold " + indices.length + " ints, not a multiple of tokens*layers = " + rows);
    int k = (int) (indices.length / rows);
    for (int id : layerIds) {
      RouterReplay r = layer(id);
      if (r.neverReplay()) throw new ReplayStateException(id, microBatch, "layer " + id + " is marked never-replay; no indices can be set for it");
    }
    for (int i = 0; i < nl; i++) {
      int[] own = new int[tokens * k];
      for (int t = 0; t < tokens; t++) System.arraycopy(indices, (t * nl + i) * k, own, t * k, k);
      layer(layerIds[i]).setTarget(microBatch, own, mask, tokens);
    }
  }

  /** Suspends replay on every layer until the returned scope is closed; see {@link Suspension}. */
  public Suspension suspend() {
    return new Suspension(new ArrayList<>(layers.values()));
  }

  /**
   * Checks that every entry set was replayed forward and every forward was consumed by a backward
   * recompute; call at the end of a training step.
   *
   * @throws ReplayStateException naming the first layer and micro-batch, the message listing all problems
   */
  public void checkAllConsumed() {
    List<ReplayStateException> problems = new ArrayList<>();
    for (RouterReplay r : layers.values()) problems.addAll(r.unconsumed());
    if (problems.isEmpty()) return;
    StringBuilder msg = new StringBuilder("replay entries left unconsumed: ");
    for (int i = 0; i < problems.size(); i++) msg.append(i == 0 ? "" : "; ").append(problems.get(i).getMessage());
    ReplayStateException first = problems.get(0);
    throw new ReplayStateException(first.layerId(), first.microBatch(), msg.toString());
  }

  /** Drops every pending and queued entry and resets recording positions (for example after a failed step). */
  public void clear() {
    for (RouterReplay r : layers.values()) r.clear();
  }

  private static MoeRouterException invalid(String message) {
    return new MoeRouterException(Status.INVALID_ARGUMENT, message);
  }

  @Override
  public String toString() {
    return "ReplayRegistry" + layers.values();
  }
}
