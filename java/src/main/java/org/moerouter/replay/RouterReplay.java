package org.moerouter.replay;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import org.moerouter.LogitsType;
import org.moerouter.MoeRouter;
import org.moerouter.MoeRouterException;
import org.moerouter.Status;

/**
 * Routing replay state of one MoE layer (ROUTING_SPEC.md section 7), created by a {@link ReplayRegistry}.
 * The layer's forward calls {@link #route} instead of {@link MoeRouter#route}; what happens depends on the
 * current {@link ReplayAction}:
 * <ul>
 *   <li>{@code NONE}: live routing;</li>
 *   <li>{@code RECORD}: live routing, then the indices [tokens, k] are appended to the caller-sized
 *       recording buffer ({@link #setRecordBuffer}); no allocation per call;</li>
 *   <li>{@code REPLAY_FORWARD}: takes the oldest indices set with {@link #setTarget} (one entry per
 *       micro-batch), replays them ({@link MoeRouter#replay}: forced experts, live weights, masked rows
 *       live) and queues them for the backward recompute;</li>
 *   <li>{@code REPLAY_BACKWARD}: activation recompute; replays the queued entries in FIFO order.</li>
 * </ul>
 * Target arrays are referenced, not copied: leave them untouched until the backward has consumed them.
 * Layers marked never-replay (multi-token-prediction layers) always route live.
 *
 * <p>Not thread-safe: one model drives its registry from the thread running forward and backward.
 * Errors in the bookkeeping are {@link ReplayStateException}s naming the layer and micro-batch.
 */
public final class RouterReplay {
  private final int layerId;
  private final boolean neverReplay;
  private ReplayAction action = ReplayAction.NONE;
  private final ArrayDeque<Target> pending = new ArrayDeque<>();
  private final ArrayDeque<Target> queued = new ArrayDeque<>();
  private int[] recordBuffer;
  private long recordDevice;
  private long recordCapacityTokens;
  private long recordedTokens;

  /** Indices of one micro-batch, on the host (arrays) or on the device (addresses). */
  static final class Target {
    final int microBatch;
    final long tokens;
    final int[] indices;
    final byte[] mask;
    final long indicesAddress;
    final long maskAddress;

    Target(int microBatch, long tokens, int[] indices, byte[] mask, long indicesAddress, long maskAddress) {
      this.microBatch = microBatch;
      this.tokens = tokens;
      this.indices = indices;
      this.mask = mask;
      this.indicesAddress = indicesAddress;
      this.maskAddress = maskAddress;
    }

    boolean onDevice() {
      return indices == null;
    }
  }

  RouterReplay(int layerId, boolean neverReplay) {
    this.layerId = layerId;
    this.neverReplay = neverReplay;
  }

  public int layerId() {
    return layerId;
  }

  /** True for layers that are never replayed (multi-token prediction): they always route live. */
  public boolean neverReplay() {
    return neverReplay;
  }

  public ReplayAction action() {
    return action;
  }

  /**
   * Sets this layer's action. A never-replay layer accepts only {@link ReplayAction#NONE}
   * ({@link ReplayRegistry#setAction} skips such layers).
   */
  public void setAction(ReplayAction action) {
    Objects.requireNonNull(action, "action");
    if (neverReplay && action != ReplayAction.NONE)
      throw new ReplayStateException(layerId, -1, "layer " + layerId + " is marked never-replay; it cannot " + action);
    this.action = action;
  }

  void forceAction(ReplayAction a) {
    this.action = a;
  }

  /** Suspends replay on this layer only; see {@link Suspension}. */
  public Suspension suspend() {
    return new Suspension(List.of(this));
  }

  // ------------------------------------------------------------------ targets

  /**
   * Sets the indices [tokens, k] to replay for {@code microBatch} (and an optional mask [tokens]; rows
   * with 0 route live). Entries are consumed by REPLAY_FORWARD in the order they were set.
   */
  public void setTarget(int microBatch, int[] indices, byte[] mask, int tokens) {
    Objects.requireNonNull(indices, "indices");
    if (tokens < 0) throw invalid("tokens must be >= 0, got " + tokens);
    if (mask != null && mask.length < tokens) throw invalid("mask holds " + mask.length + " entries, needs " + tokens);
    addTarget(new Target(microBatch, tokens, indices, mask, 0, 0));
  }

  /**
   * CUDA: sets device indices [tokens, k] (int32) and an optional device mask [tokens] (uint8, 0 for
   * none) for {@code microBatch}; used by {@link #routeDevice}.
   */
  public void setTargetDevice(int microBatch, long indices, long mask, long tokens) {
    if (tokens < 0) throw invalid("tokens must be >= 0, got " + tokens);
    if (indices == 0 && tokens > 0) throw invalid("device indices must not be 0");
    addTarget(new Target(microBatch, tokens, null, null, indices, mask));
  }

  private void addTarget(Target t) {
    if (neverReplay)
      throw new ReplayStateException(layerId, t.microBatch, "layer " + layerId + " is marked never-replay; no indices can be set for it");
    for (Target p : pending)
      if (p.microBatch == t.microBatch)
        throw new ReplayStateException(layerId, t.microBatch, "layer " + layerId + ": indices for micro-batch " + t.microBatch
            + " are already set and not yet consumed");
    pending.add(t);
  }

  /** Micro-batches set but not yet replayed forward, oldest first. */
  public int[] pendingMicroBatches() {
    return pending.stream().mapToInt(t -> t.microBatch).toArray();
  }

  /** Micro-batches replayed forward and waiting for the backward recompute, oldest first. */
  public int[] queuedMicroBatches() {
    return queued.stream().mapToInt(t -> t.microBatch).toArray();
  }

  /** Drops every pending and queued entry and the recording position. */
  public void clear() {
    pending.clear();
    queued.clear();
    recordedTokens = 0;
  }

  /** Problems for {@link ReplayRegistry#checkAllConsumed()}; empty when everything was consumed. */
  List<ReplayStateException> unconsumed() {
    List<ReplayStateException> out = new ArrayList<>();
    if (!pending.isEmpty())
      out.add(new ReplayStateException(layerId, pending.peek().microBatch, "layer " + layerId + ": indices set for micro-batch "
          + list(pending) + " never used by a REPLAY_FORWARD"));
    if (!queued.isEmpty())
      out.add(new ReplayStateException(layerId, queued.peek().microBatch, "layer " + layerId + ": micro-batch " + list(queued)
          + " replayed forward but never consumed by REPLAY_BACKWARD (activation recompute)"));
    return out;
  }

  private static String list(ArrayDeque<Target> q) {
    StringBuilder s = new StringBuilder();
    for (Target t : q) s.append(s.length() == 0 ? "" : ", ").append(t.microBatch);
    return q.size() == 1 ? s.toString() : "s " + s;
  }

  // ------------------------------------------------------------------ recording

  /**
   * The host recording buffer: RECORD appends [tokens, k] indices to it, from position
   * {@link #recordedTokens()} * k; its length bounds what can be recorded. Resets the position.
   */
  public void setRecordBuffer(int[] buffer) {
    this.recordBuffer = buffer;
    this.recordDevice = 0;
    this.recordedTokens = 0;
  }

  /**
   * CUDA: a device int32 buffer for {@code capacityTokens} rows of k indices that RECORD in
   * {@link #routeDevice} appends to, asynchronously on the call's stream. Resets the position.
   */
  public void setRecordBufferDevice(long address, long capacityTokens) {
    if (address == 0 || capacityTokens < 0) throw invalid("device recording buffer must be non-0 with capacity >= 0");
    this.recordDevice = address;
    this.recordCapacityTokens = capacityTokens;
    this.recordBuffer = null;
    this.recordedTokens = 0;
  }

  /** Tokens recorded since the buffer was set or {@link #resetRecording()}. */
  public long recordedTokens() {
    return recordedTokens;
  }

  /** The host recording buffer (the caller's own array), or null. */
  public int[] recordBuffer() {
    return recordBuffer;
  }

  /** Starts recording again at the start of the buffer. */
  public void resetRecording() {
    recordedTokens = 0;
  }

  // ------------------------------------------------------------------ routing

  /** Routes fp32 logits [tokens, E] according to the action; returns the router's non-finite row count. */
  public long route(MoeRouter router, float[] logits, int tokens, int[] outIdx, float[] outWeights) {
    return route(router, logits, null, LogitsType.FP32, tokens, outIdx, outWeights);
  }

  /** Routes bf16/fp16 logits (raw 16-bit values) according to the action. */
  public long route(MoeRouter router, short[] logits, LogitsType type, int tokens, int[] outIdx, float[] outWeights) {
    return route(router, null, logits, type, tokens, outIdx, outWeights);
  }

  private long route(MoeRouter router, float[] f32, short[] half, LogitsType type, int tokens, int[] outIdx, float[] outWeights) {
    Objects.requireNonNull(router, "router");
    int k = router.config().topK();
    switch (action) {
      case RECORD: {
        if (recordBuffer == null)
          throw new ReplayStateException(layerId, -1, "layer " + layerId + ": RECORD needs a host recording buffer (setRecordBuffer)");
        long capacity = recordBuffer.length / k;
        if (recordedTokens + tokens > capacity)
          throw new ReplayStateException(layerId, -1, "layer " + layerId + ": recording buffer holds " + capacity + " tokens, "
              + recordedTokens + " recorded, this call routes " + tokens);
        long bad = f32 != null ? router.route(f32, tokens, outIdx, outWeights) : router.route(half, type, tokens, outIdx, outWeights);
        System.arraycopy(outIdx, 0, recordBuffer, (int) (recordedTokens * k), tokens * k);
        recordedTokens += tokens;
        return bad;
      }
      case REPLAY_FORWARD:
      case REPLAY_BACKWARD: {
        boolean fwd = action == ReplayAction.REPLAY_FORWARD;
        Target t = next(fwd, tokens);
        if (t.onDevice())
          throw new ReplayStateException(layerId, t.microBatch, "layer " + layerId + " micro-batch " + t.microBatch
              + ": indices were set on the device (setTargetDevice); use routeDevice");
        if (t.indices.length < (long) tokens * k)
          throw new ReplayStateException(layerId, t.microBatch, "layer " + layerId + " micro-batch " + t.microBatch + ": indices hold "
              + t.indices.length + " ints, " + tokens + " tokens of k=" + k + " need " + (long) tokens * k);
        long bad = f32 != null ? router.replay(f32, tokens, t.indices, t.mask, outIdx, outWeights)
            : router.replay(half, type, tokens, t.indices, t.mask, outIdx, outWeights);
        advance(fwd);
        return bad;
      }
      default:
        return f32 != null ? router.route(f32, tokens, outIdx, outWeights) : router.route(half, type, tokens, outIdx, outWeights);
    }
  }

  /**
   * CUDA: routes device logits according to the action, enqueued on {@code stream} (see
   * {@link MoeRouter#routeDevice}). RECORD writes the live indices straight into the device recording
   * buffer and fills {@code outIdx}/{@code outWeights} with a replay of them (a second, cheap kernel: the
   * binding has no device copy), so nothing is synchronised or copied to the host. Replay actions need
   * targets set with {@link #setTargetDevice}. Invalid device indices surface at
   * {@link MoeRouter#checkReplay()}.
   */
  public void routeDevice(MoeRouter router, long logits, LogitsType type, long tokens, long outIdx, long outWeights,
      long nonfiniteRows, long stream) {
    Objects.requireNonNull(router, "router");
    int k = router.config().topK();
    switch (action) {
      case RECORD: {
        if (recordDevice == 0)
          throw new ReplayStateException(layerId, -1, "layer " + layerId + ": RECORD on the device needs setRecordBufferDevice");
        if (recordedTokens + tokens > recordCapacityTokens)
          throw new ReplayStateException(layerId, -1, "layer " + layerId + ": device recording buffer holds " + recordCapacityTokens
              + " tokens, " + recordedTokens + " recorded, this call routes " + tokens);
        long slice = recordDevice + recordedTokens * k * 4L;
        router.routeDevice(logits, type, tokens, 0, 0, slice, outWeights, nonfiniteRows, stream);
        router.routeDevice(logits, type, tokens, slice, 0, outIdx, outWeights, 0, stream);
        recordedTokens += tokens;
        return;
      }
      case REPLAY_FORWARD:
      case REPLAY_BACKWARD: {
        boolean fwd = action == ReplayAction.REPLAY_FORWARD;
        Target t = next(fwd, tokens);
        if (!t.onDevice())
          throw new ReplayStateException(layerId, t.microBatch, "layer " + layerId + " micro-batch " + t.microBatch
              + ": indices were set on the host (setTarget); use route");
        router.routeDevice(logits, type, tokens, t.indicesAddress, t.maskAddress, outIdx, outWeights,
            nonfiniteRows, stream);
        advance(fwd);
        return;
      }
      default:
        router.routeDevice(logits, type, tokens, 0, 0, outIdx, outWeights, nonfiniteRows, stream);
    }
  }

  private Target next(boolean forward, long tokens) {
    Target t = forward ? pending.peek() : queued.peek();
    if (t == null)
      throw new ReplayStateException(layerId, -1, forward
          ? "layer " + layerId + ": REPLAY_FORWARD but no indices were set for this micro-batch (setTarget)"
          : "layer " + layerId + ": REPLAY_BACKWARD but no replayed micro-batch is queued (more recomputes than replayed forwards)");
    if (t.tokens != tokens)
      throw new ReplayStateException(layerId, t.microBatch, "layer " + layerId + " micro-batch " + t.microBatch + ": indices were set for "
          + t.tokens + " tokens, the " + (forward ? "forward" : "backward recompute") + " routes " + tokens);
    return t;
  }

  private void advance(boolean forward) {
    if (forward) queued.add(pending.poll());
    else queued.poll();
  }

  private static MoeRouterException invalid(String message) {
    return new MoeRouterException(Status.INVALID_ARGUMENT, message);
  }

  @Override
  public String toString() {
    return "RouterReplay{layer=" + layerId + ", " + action + (neverReplay ? ", never-replay" : "") + ", pending=" + pending.size()
        + ", queued=" + queued.size() + "}";
  }
}
