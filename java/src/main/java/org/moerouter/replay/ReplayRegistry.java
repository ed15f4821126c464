// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.moerouter.MinusOneRows;
import org.moerouter.MoeRouterException;
import org.moerouter.RouterConfig;
import org.moerouter.Status;

/**
 * The per-layer replay states of one model (docs/semantics.md section 7; Megatron's
 * {@code RouterReplay.global_router_replay_instances} without the global: each model owns its registry).
 * Layers are keyed by {@link LayerKey} (kind and number) and kept in registration order, which is the
 * order of the every-layer calls ({@link #setReplayData}, {@link #setStaticBuffer}, {@link #recordedData}),
 * as Megatron's creation order is.
 *
 * <pre>{@code
 * ReplayRegistry replay = new ReplayRegistry();                    // ON_SET, LATEST, REJECT
 * for (int l : moeLayers) replay.addLayer(LayerKey.decoder(l), config);
 * replay.addLayer(LayerKey.mtp(0), config, true);                  // never replayed
 *
 * replay.setReplayData(stacked, new long[] {T, moeLayers.length, k}, null, mask);   // [T, layers, k]
 * replay.setAction(ReplayAction.REPLAY_FORWARD);
 * model.forward();   // log-prob pass: each layer calls replay.layer(key).route(router, ...)
 * model.forward();   // training pass: same targets, not consumed
 * replay.setAction(ReplayAction.REPLAY_BACKWARD);
 * model.recompute(); // activation recompute pops each layer's backward FIFO
 * replay.clear();    // targets, recordings and FIFOs; actions stay
 * }</pre>
 *
 * Options ({@link #builder()}): {@link BackwardQueue}, {@link RecordMode}, {@link MinusOneRows}. Not
 * thread-safe (see {@link RouterReplay}).
 *
 * <p>Traps: registration order is the order of every all-layers call, so register layers in the model's
 * router creation order (decoder layers, then MTP layers), as Megatron's {@code set_replay_data} expects; and
 * {@link #clear()} keeps the actions ({@link #clearActions()} resets them).
 */
public final class ReplayRegistry {
  private final Map<LayerKey, RouterReplay> layers = new LinkedHashMap<>();
  private final BackwardQueue backwardQueue;
  private final RecordMode recordMode;
  private final MinusOneRows minusOneRows;

  /** A registry with the default options: {@code ON_SET}, {@code LATEST}, {@code REJECT}. */
  public ReplayRegistry() {
    this(builder());
  }

  private ReplayRegistry(Builder b) {
    this.backwardQueue = b.backwardQueue;
    this.recordMode = b.recordMode;
    this.minusOneRows = b.minusOneRows;
  }

  /**
   * A builder of a registry with non-default options.
   *
   * <pre>{@code
   * ReplayRegistry slimeStyle = ReplayRegistry.builder()
   *     .recordMode(RecordMode.APPEND).backwardQueue(BackwardQueue.ON_FORWARD).build();
   * }</pre>
   *
   * @return a builder with the defaults {@code ON_SET}, {@code LATEST}, {@code REJECT}
   */
  public static Builder builder() {
    return new Builder();
  }

  /** Options of a {@link ReplayRegistry}; each names the peer behaviour it reproduces. */
  public static final class Builder {
    private BackwardQueue backwardQueue = BackwardQueue.ON_SET;
    private RecordMode recordMode = RecordMode.LATEST;
    private MinusOneRows minusOneRows = MinusOneRows.REJECT;

    private Builder() {}

    /**
     * When the backward FIFO is filled; default {@link BackwardQueue#ON_SET} (Megatron).
     *
     * @param q the queueing rule of every layer
     * @return this builder
     */
    public Builder backwardQueue(BackwardQueue q) {
      this.backwardQueue = Objects.requireNonNull(q, "backwardQueue");
      return this;
    }

    /**
     * What RECORD keeps; default {@link RecordMode#LATEST} (Megatron); APPEND for slime/miles.
     *
     * @param m the recording rule of every layer
     * @return this builder
     */
    public Builder recordMode(RecordMode m) {
      this.recordMode = Objects.requireNonNull(m, "recordMode");
      return this;
    }

    /**
     * What targets' all-(-1) rows mean; default {@link MinusOneRows#REJECT}; LIVE or ARANGE (miles).
     *
     * @param m the policy applied when a target is set
     * @return this builder
     */
    public Builder minusOneRows(MinusOneRows m) {
      this.minusOneRows = Objects.requireNonNull(m, "minusOneRows");
      return this;
    }

    /**
     * The registry, with no layers yet.
     *
     * @return a new registry with this builder's options
     */
    public ReplayRegistry build() {
      return new ReplayRegistry(this);
    }
  }

  /**
   * When the layers' backward FIFOs are filled.
   *
   * @return the registry's queueing rule
   */
  public BackwardQueue backwardQueue() {
    return backwardQueue;
  }

  /**
   * What RECORD keeps.
   *
   * @return the registry's recording rule
   */
  public RecordMode recordMode() {
    return recordMode;
  }

  /**
   * What targets' all-(-1) rows mean.
   *
   * @return the registry's policy for rows of -1
   */
  public MinusOneRows minusOneRows() {
    return minusOneRows;
  }

  // ------------------------------------------------------------------ layers

  /**
   * Adds a replayable layer routed by a router of {@code config} (its E and top-k bound the targets).
   *
   * @param key the layer's kind and number, not yet registered
   * @param config the configuration of the layer's router
   * @return the layer's replay state
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when the key is already registered
   */
  public RouterReplay addLayer(LayerKey key, RouterConfig config) {
    return addLayer(key, config, false);
  }

  /**
   * Adds a layer.
   *
   * @param key the layer's kind and number, not yet registered
   * @param config the configuration of the layer's router
   * @param neverReplay true for layers without recorded routing: they always route live
   * @return the layer's replay state
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when the key is already registered
   */
  public RouterReplay addLayer(LayerKey key, RouterConfig config, boolean neverReplay) {
    Objects.requireNonNull(config, "config");
    return addLayer(key, config.experts(), config.topK(), neverReplay);
  }

  /**
   * Adds a replayable layer of E experts and top-k.
   *
   * @param key the layer's kind and number, not yet registered
   * @param experts E, {@code >= topK}
   * @param topK k, {@code >= 1}
   * @return the layer's replay state
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a bad size or a key already registered
   */
  public RouterReplay addLayer(LayerKey key, int experts, int topK) {
    return addLayer(key, experts, topK, false);
  }

  /**
   * Adds a layer of E experts and top-k.
   *
   * @param key the layer's kind and number, not yet registered
   * @param experts E, {@code >= topK}
   * @param topK k, {@code >= 1}
   * @param neverReplay true for layers that always route live
   * @return the layer's replay state
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a bad size or a key already registered
   */
  public RouterReplay addLayer(LayerKey key, int experts, int topK, boolean neverReplay) {
    Objects.requireNonNull(key, "key");
    if (experts < 1 || topK < 1 || topK > experts)
      throw invalid(key + ": need 1 <= topK <= experts, got topK " + topK + " of " + experts);
    if (layers.containsKey(key)) throw invalid(key + " is already registered");
    RouterReplay r = new RouterReplay(key, experts, topK, neverReplay, backwardQueue, recordMode, minusOneRows);
    layers.put(key, r);
    return r;
  }

  /**
   * The layer of {@code key}.
   *
   * @param key a registered key
   * @return its replay state
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} listing the registered layers when the key is not one
   */
  public RouterReplay layer(LayerKey key) {
    Objects.requireNonNull(key, "key");
    RouterReplay r = layers.get(key);
    if (r == null) throw invalid(key + " is not registered (layers: " + layers.keySet() + ")");
    return r;
  }

  /**
   * The layer of the given kind and number.
   *
   * @param kind decoder or MTP
   * @param number the layer's number within its kind
   * @return its replay state
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when no such layer is registered
   */
  public RouterReplay layer(LayerKind kind, int number) {
    return layer(LayerKey.of(kind, number));
  }

  /**
   * Whether {@code key} is registered.
   *
   * @param key a layer key
   * @return true when a layer of that key was added
   */
  public boolean hasLayer(LayerKey key) {
    return layers.containsKey(key);
  }

  /**
   * Every layer, in registration order.
   *
   * @return an unmodifiable snapshot of the layers
   */
  public List<RouterReplay> layers() {
    return Collections.unmodifiableList(new ArrayList<>(layers.values()));
  }

  /**
   * The keys of the layers that accept targets (not never-replay), in registration order: the order of
   * {@link #setReplayData(int[][], int, byte[])}.
   *
   * @return a new array of keys
   */
  public LayerKey[] replayableKeys() {
    return layers.values().stream().filter(r -> !r.neverReplay()).map(RouterReplay::key).toArray(LayerKey[]::new);
  }

  /**
   * Sets the action of every replayable layer (never-replay layers stay {@link ReplayAction#NONE}).
   *
   * @param action the action of the next calls
   */
  public void setAction(ReplayAction action) {
    Objects.requireNonNull(action, "action");
    for (RouterReplay r : layers.values()) if (!r.neverReplay()) r.setAction(action);
  }

  /** Every layer back to {@link ReplayAction#NONE} (Megatron {@code clear_global_router_replay_action}). */
  public void clearActions() {
    for (RouterReplay r : layers.values()) r.forceAction(ReplayAction.NONE);
  }

  /**
   * Suspends replay on every layer until the returned scope is closed; see {@link Suspension}.
   *
   * @return the region; closing it restores every layer's current action
   */
  public Suspension suspend() {
    return new Suspension(new ArrayList<>(layers.values()));
  }

  // ------------------------------------------------------------------ targets

  /**
   * Sets one layer's target [tokens, k]; see {@link RouterReplay#setTargetIndices(int[], int, byte[])}.
   *
   * @param key a registered layer
   * @param indices target experts [tokens, k]; referenced, not copied
   * @param tokens T
   * @param mask [tokens], 0 = route that row live; null replays every row
   * @throws ReplayStateException naming the layer, the shape given and the shape needed, or the bad row
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when the key is not registered
   */
  public void setTargetIndices(LayerKey key, int[] indices, int tokens, byte[] mask) {
    layer(key).setTargetIndices(indices, tokens, mask);
  }

  /**
   * Sets every replayable layer's target at once (Megatron {@code set_replay_data}): exactly one array
   * [tokens, k] per layer of {@link #replayableKeys()}, in that order, and one optional mask [tokens]
   * shared by all. All-or-nothing: every array is validated before any layer changes.
   *
   * @param perLayer one target [tokens, k] per replayable layer; referenced, not copied
   * @param tokens T, the same for every layer
   * @param mask [tokens], 0 = route that row live in every layer; null replays every row
   * @throws ReplayStateException for a wrong number of arrays, or naming the first layer whose array does
   *     not fit (both shapes) or holds a bad row
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when tokens is negative
   */
  public void setReplayData(int[][] perLayer, int tokens, byte[] mask) {
    Objects.requireNonNull(perLayer, "perLayer");
    LayerKey[] keys = replayableKeys();
    if (perLayer.length != keys.length)
      throw new ReplayStateException(null, "setReplayData got " + perLayer.length + " arrays for " + keys.length
          + " replayable layers " + Arrays.toString(keys) + " (one per layer, in registration order)");
    if (tokens < 0) throw invalid("tokens must be >= 0, got " + tokens);
    TargetRows.Checked[] checked = new TargetRows.Checked[keys.length];
    for (int i = 0; i < keys.length; i++) {
      RouterReplay r = layers.get(keys[i]);
      int[] a = Objects.requireNonNull(perLayer[i], "perLayer[" + i + "]");
      if ((long) tokens * r.topK() != a.length)
        throw new ReplayStateException(keys[i], keys[i] + ": setReplayData array " + i + " is "
            + TargetRows.impliedShape(a.length, tokens) + ", the layer needs " + TargetRows.shape(tokens, r.topK()));
      checked[i] = r.check(a, tokens, mask);
    }
    for (int i = 0; i < keys.length; i++) layers.get(keys[i]).install(tokens, checked[i]);
  }

  /**
   * Sets the targets of several layers from one stacked array [T, L, k] (the layout of a trace, of
   * Megatron's recorded data and of slime/verl after selecting the MoE layers): position {@code i} of the
   * second axis goes to layer {@code layers[i]} (null: {@link #replayableKeys()} in order). {@code shape} is
   * the array's shape and must be [T, layers.length, k]. Each layer gets its own [T, k] copy; the mask [T]
   * (nullable) is shared. All-or-nothing.
   *
   * <pre>{@code
   * RoutingTrace trace = TraceFiles.open(path);
   * int[] sample = trace.sample(s);                                   // [T, layers, k]
   * replay.setReplayData(sample, new long[] {trace.sampleTokens(s), trace.layers(), trace.topK()},
   *     trace.layerKeys(), trace.sampleMask(s));
   * }</pre>
   *
   * @param stacked the indices [T, L, k], row-major
   * @param shape the array's shape, {@code [T, L, k]}
   * @param layerKeys the layer of each position of the second axis (registered, distinct, one top-k); null
   *     for {@link #replayableKeys()}
   * @param mask [T], 0 = route that row live in every layer; null replays every row
   * @throws ReplayStateException when the shape is not [T, layers, k], or naming the first layer with a bad row
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when the shape does not describe the array, a
   *     key is unknown or repeated, or the layers differ in top-k
   */
  public void setReplayData(int[] stacked, long[] shape, LayerKey[] layerKeys, byte[] mask) {
    Objects.requireNonNull(stacked, "stacked");
    Objects.requireNonNull(shape, "shape");
    LayerKey[] keys = layerKeys != null ? layerKeys.clone() : replayableKeys();
    if (TargetRows.elements(shape) != stacked.length)
      throw invalid("shape " + Arrays.toString(shape) + " does not describe " + stacked.length + " indices");
    for (int i = 0; i < keys.length; i++) {
      layer(Objects.requireNonNull(keys[i], "layers[" + i + "]"));
      for (int j = 0; j < i; j++) if (keys[j].equals(keys[i])) throw invalid(keys[i] + " listed twice");
    }
    int k = keys.length == 0 ? -1 : layers.get(keys[0]).topK();
    for (LayerKey key : keys)
      if (layers.get(key).topK() != k)
        throw invalid("stacked replay data needs one top-k for all its layers; " + keys[0] + " is top-" + k + ", " + key
            + " is top-" + layers.get(key).topK());
    if (shape.length != 3 || shape[1] != keys.length || shape[2] != k)
      throw new ReplayStateException(null, "setReplayData: stacked indices " + Arrays.toString(shape) + " do not match "
          + TargetRows.shape(shape.length > 0 ? shape[0] : 0, keys.length, k) + " (tokens, " + keys.length + " layers "
          + Arrays.toString(keys) + ", top-" + k + ")");
    int tokens = Math.toIntExact(shape[0]);
    int nl = keys.length;
    TargetRows.Checked[] checked = new TargetRows.Checked[nl];
    for (int i = 0; i < nl; i++) {
      int[] own = new int[tokens * k];
      for (int t = 0; t < tokens; t++) System.arraycopy(stacked, (t * nl + i) * k, own, t * k, k);
      checked[i] = layers.get(keys[i]).check(own, tokens, mask);
    }
    for (int i = 0; i < nl; i++) layers.get(keys[i]).install(tokens, checked[i]);
  }

  // ------------------------------------------------------------------ recording

  /**
   * Every layer records into its strided slice of one caller-owned buffer [maxTokens, layers, k], layers in
   * registration order (Megatron {@code set_global_static_buffers}); all layers must share k. Clears every
   * recording.
   *
   * @param buffer exactly {@code maxTokens * layers * k} ints
   * @param maxTokens rows per layer; a RECORD call routing more is refused before routing
   * @throws ReplayStateException when the buffer's length is not [maxTokens, layers, k]
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when no layer is registered or the layers
   *     differ in top-k
   */
  public void setStaticBuffer(int[] buffer, int maxTokens) {
    Objects.requireNonNull(buffer, "buffer");
    List<RouterReplay> all = layers();
    if (all.isEmpty()) throw invalid("no layers registered");
    int k = all.get(0).topK();
    for (RouterReplay r : all)
      if (r.topK() != k) throw invalid("a static buffer needs one top-k for all layers; " + all.get(0).key() + " is top-" + k
          + ", " + r.key() + " is top-" + r.topK());
    int nl = all.size();
    if (maxTokens < 0 || (long) maxTokens * nl * k != buffer.length)
      throw new ReplayStateException(null, "static buffer of " + buffer.length + " ints is not " + TargetRows.shape(maxTokens, nl, k)
          + " (max tokens, " + nl + " layers, top-" + k + ")");
    for (int i = 0; i < nl; i++) all.get(i).setRecordBuffer(buffer, i * k, nl * k, maxTokens);
  }

  /** Every layer back to its own growing recording buffer (Megatron {@code clear_global_static_buffers}). */
  public void clearStaticBuffers() {
    for (RouterReplay r : layers.values()) r.clearRecordBuffer();
  }

  /**
   * One new [recordedTokens, k] array per layer, registration order, null where nothing was recorded
   * (Megatron {@code get_recorded_data}).
   *
   * @return one entry per registered layer
   * @throws ReplayStateException when a layer records in device memory
   */
  public int[][] recordedData() {
    List<RouterReplay> all = layers();
    int[][] out = new int[all.size()][];
    for (int i = 0; i < out.length; i++) out[i] = all.get(i).recordedIndices();
    return out;
  }

  /**
   * The recordings of {@code layerKeys} (null: all layers, registration order) stacked as [T, layers, k], the
   * layout of a trace sample. Every layer must have recorded the same T with the same k.
   *
   * @param layerKeys the layers to stack, in that order; null for every layer in registration order
   * @return a new array [T, layers, k], what {@code RoutingTrace.Builder.addSample} takes
   * @throws ReplayStateException naming a layer that recorded nothing or a different shape
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for an empty or unknown key list
   */
  public int[] recordedStacked(LayerKey[] layerKeys) {
    LayerKey[] keys = layerKeys != null ? layerKeys.clone() : layers.keySet().toArray(new LayerKey[0]);
    if (keys.length == 0) throw invalid("no layers to stack");
    RouterReplay first = layer(keys[0]);
    for (LayerKey key : keys) {
      RouterReplay r = layer(key);
      if (!r.hasRecording()) throw new ReplayStateException(key, key + ": nothing recorded");
      if (r.recordedTokens() != first.recordedTokens() || r.topK() != first.topK())
        throw new ReplayStateException(key, key + " recorded " + TargetRows.shape(r.recordedTokens(), r.topK()) + ", "
            + first.key() + " recorded " + TargetRows.shape(first.recordedTokens(), first.topK()) + ": they cannot be stacked");
    }
    int[] out = new int[Math.toIntExact(first.recordedTokens() * keys.length * first.topK())];
    for (int i = 0; i < keys.length; i++) layers.get(keys[i]).copyRecordedInto(out, i, keys.length);
    return out;
  }

  // ------------------------------------------------------------------ end of step

  /**
   * Checks that every backward FIFO is empty: each queued target was popped by one activation recompute.
   * Call at the end of a step that recomputes every layer.
   *
   * @throws ReplayStateException naming the first layer, the message listing every layer with entries left
   */
  public void checkAllConsumed() {
    StringBuilder msg = new StringBuilder();
    LayerKey first = null;
    for (RouterReplay r : layers.values()) {
      if (r.backwardQueueSize() == 0) continue;
      if (first == null) first = r.key();
      msg.append(msg.length() == 0 ? "" : "; ").append(r.key()).append(": ").append(r.backwardQueueSize())
          .append(r.backwardQueueSize() == 1 ? " entry" : " entries").append(" never popped by REPLAY_BACKWARD");
    }
    if (first != null) throw new ReplayStateException(first, "replay entries left in backward queues: " + msg);
  }

  /**
   * Empties every layer's target, backward FIFO and recording (Megatron {@code clear_global_indices}, for
   * example after a step or a failed step); actions, options and recording buffers stay.
   */
  public void clear() {
    for (RouterReplay r : layers.values()) r.clear();
  }

  private static MoeRouterException invalid(String message) {
    return new MoeRouterException(Status.INVALID_ARGUMENT, message);
  }

  @Override
  public String toString() {
    return "ReplayRegistry{" + backwardQueue + ", " + recordMode + ", minus_one_rows " + minusOneRows + ", " + layers.values() + "}";
  }
}
