// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Objects;
import org.moerouter.LogitsType;
import org.moerouter.MinusOneRows;
import org.moerouter.MoeRouter;
import org.moerouter.MoeRouterException;
import org.moerouter.NonFinitePolicy;
import org.moerouter.RouterConfig;
import org.moerouter.Status;

/**
 * Routing replay state of one MoE layer (docs/semantics.md section 7, Megatron's {@code RouterReplay}),
 * created by {@link ReplayRegistry#addLayer}. The layer's forward calls {@link #route} instead of
 * {@link MoeRouter#route}; what happens depends on the current {@link ReplayAction}:
 * <ul>
 *   <li>{@code NONE}: live routing;</li>
 *   <li>{@code RECORD}: live routing, and the indices [T, k] are kept ({@link RecordMode}: the latest call,
 *       or every call appended) in the layer's own growing buffer or in a caller-owned buffer
 *       ({@link #setRecordBuffer}, also a strided slice of a stacked [max_tokens, layers, k] buffer);</li>
 *   <li>{@code REPLAY_FORWARD}: replays the target set with {@link #setTargetIndices} ({@link MoeRouter#replay}:
 *       forced experts, live weights, masked rows live) without consuming it: it stays until replaced or
 *       cleared, so a log-prob pass and the training pass reuse it;</li>
 *   <li>{@code REPLAY_BACKWARD}: activation recompute; pops the backward FIFO's front entry and replays it.
 *       The FIFO is filled once per set ({@link BackwardQueue#ON_SET}, Megatron) or once per forward use
 *       ({@link BackwardQueue#ON_FORWARD}).</li>
 * </ul>
 *
 * <p>Targets must be exactly [T, k], k the layer's top-k, with every row valid (k distinct experts in
 * [0, E), rows with mask 0 excepted, rows of -1 as {@link MinusOneRows} says); a wrong shape or row is
 * rejected when set, with an error naming the layer and both shapes, and nothing changes. Target arrays
 * are referenced, not copied (copies are made only where a -1 row is rewritten): leave them untouched
 * until the layer is cleared.
 *
 * <p>Layers marked never-replay (for example multi-token-prediction layers without recorded routing)
 * accept no target and no action but {@code NONE}. Not thread-safe: one model drives its registry from the
 * thread running forward and backward. Bookkeeping errors are {@link ReplayStateException}s naming the layer.
 *
 * <pre>{@code
 * RouterReplay layer = registry.layer(LayerKey.decoder(3));
 * layer.setTargetIndices(recorded, tokens, mask);          // [tokens, k], checked now
 * layer.setAction(ReplayAction.REPLAY_FORWARD);
 * layer.route(router, logits, tokens, idx, weights);       // in the layer's forward, instead of router.route
 * }</pre>
 *
 * <p>Traps: the backward of a replayed call takes {@code outIdx}, not the target (rows of -1 and masked rows
 * are resolved there); and the router passed to {@link #route} must have this layer's E and top-k.
 */
public final class RouterReplay {
  private final LayerKey key;
  private final int experts;
  private final int topK;
  private final boolean neverReplay;
  private final BackwardQueue backwardQueue;
  private final RecordMode recordMode;
  private final MinusOneRows minusOneRows;
  private ReplayAction action = ReplayAction.NONE;

  private Target target;
  private final ArrayDeque<Target> backward = new ArrayDeque<>();

  // Recording on the host: rows [0, recordedTokens) at buffer[offset + row * stride ..+k].
  private int[] recordBuffer;
  private int recordOffset;
  private int recordStride;
  private long recordCapacity;      // rows; -1 for the layer's own growing buffer
  private long recordedTokens;
  private int[] callTokens = new int[4];
  private int calls;
  // Recording on the device: a contiguous int32 [capacity, k] buffer.
  private long recordDevice;
  private long recordDeviceCapacity;

  /** Indices [tokens, k] of one set, on the host (arrays) or on the device (addresses). */
  static final class Target {
    final int tokens;
    final long deviceTokens;
    final int[] indices;
    final byte[] mask;
    final long indicesAddress;
    final long maskAddress;

    Target(int tokens, int[] indices, byte[] mask) {
      this.tokens = tokens;
      this.deviceTokens = tokens;
      this.indices = indices;
      this.mask = mask;
      this.indicesAddress = 0;
      this.maskAddress = 0;
    }

    Target(long tokens, long indices, long mask) {
      this.tokens = -1;
      this.deviceTokens = tokens;
      this.indices = null;
      this.mask = null;
      this.indicesAddress = indices;
      this.maskAddress = mask;
    }

    boolean onDevice() {
      return indices == null;
    }
  }

  RouterReplay(LayerKey key, int experts, int topK, boolean neverReplay, BackwardQueue backwardQueue,
      RecordMode recordMode, MinusOneRows minusOneRows) {
    this.key = key;
    this.experts = experts;
    this.topK = topK;
    this.neverReplay = neverReplay;
    this.backwardQueue = backwardQueue;
    this.recordMode = recordMode;
    this.minusOneRows = minusOneRows;
    this.recordStride = topK;
    this.recordCapacity = -1;
  }

  /**
   * The layer's identity.
   *
   * @return its key (kind and number)
   */
  public LayerKey key() {
    return key;
  }

  /**
   * Number of experts E of the layer's router.
   *
   * @return E: target indices must lie in {@code [0, E)}
   */
  public int experts() {
    return experts;
  }

  /**
   * The layer's top-k.
   *
   * @return k: targets are [T, k] with exactly this k
   */
  public int topK() {
    return topK;
  }

  /**
   * Whether the layer is never replayed.
   *
   * @return true for layers that always route live and accept no target
   */
  public boolean neverReplay() {
    return neverReplay;
  }

  /**
   * The current action.
   *
   * @return what the next {@link #route} call does
   */
  public ReplayAction action() {
    return action;
  }

  /**
   * Sets this layer's action. A never-replay layer accepts only {@link ReplayAction#NONE}
   * ({@link ReplayRegistry#setAction} skips such layers).
   *
   * @param action the action of the next calls
   * @throws ReplayStateException when the layer is never-replay and the action is not {@code NONE}
   */
  public void setAction(ReplayAction action) {
    Objects.requireNonNull(action, "action");
    if (neverReplay && action != ReplayAction.NONE)
      throw new ReplayStateException(key, key + " is marked never-replay; it cannot " + action);
    this.action = action;
  }

  void forceAction(ReplayAction a) {
    this.action = a;
  }

  /**
   * Suspends replay on this layer only; see {@link Suspension}.
   *
   * @return the region; closing it restores the action this layer has now
   */
  public Suspension suspend() {
    return new Suspension(java.util.List.of(this));
  }

  // ------------------------------------------------------------------ targets

  /**
   * {@link #setTargetIndices(int[], int, byte[])} without a mask: every row is replayed.
   *
   * @param indices target experts [tokens, k], exactly {@code tokens * k} ints; referenced, not copied
   * @param tokens T, {@code >= 0}
   * @throws ReplayStateException naming this layer, the shape given and the shape needed, or the bad row
   */
  public void setTargetIndices(int[] indices, int tokens) {
    setTargetIndices(indices, tokens, null);
  }

  /**
   * Sets the target indices [tokens, k] (row-major, {@code indices.length == tokens * k} exactly) and an
   * optional mask [tokens] (rows with 0 route live), replacing any previous target; under
   * {@link BackwardQueue#ON_SET} also appends them to the backward FIFO. Validated first: on any error
   * nothing changes.
   *
   * <p>Trap: the arrays are referenced, not copied (unless a row of -1 is rewritten); leave them untouched
   * until the layer is cleared.
   *
   * @param indices target experts [tokens, k], exactly {@code tokens * k} ints
   * @param tokens T, {@code >= 0}; a replayed call must route exactly this many tokens
   * @param mask [tokens], 0 = route that row live, else replay it; null replays every row
   * @throws ReplayStateException naming this layer, the shape given and the shape needed, or the bad row
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when tokens is negative
   */
  public void setTargetIndices(int[] indices, int tokens, byte[] mask) {
    Objects.requireNonNull(indices, "indices");
    if (tokens < 0) throw invalid(key + ": tokens must be >= 0, got " + tokens);
    if ((long) tokens * topK != indices.length)
      throw new ReplayStateException(key, key + ": target indices " + TargetRows.impliedShape(indices.length, tokens)
          + " do not match the layer's " + TargetRows.shape(tokens, topK) + " (" + tokens + " tokens, top-" + topK + ")");
    install(indices, tokens, mask);
  }

  /**
   * Sets the target indices given with their array shape (for example a numpy array's), which must be
   * exactly [T, k]: data stacked for several layers ([T, layers, k]) goes through
   * {@link ReplayRegistry#setReplayData(int[], long[], LayerKey[], byte[])}.
   *
   * @param indices target experts, {@code product(shape)} ints; referenced, not copied
   * @param shape the array's shape, which must be {@code [T, k]}
   * @param mask [T], 0 = route that row live; null replays every row
   * @throws ReplayStateException naming this layer and both shapes when the shape is not [T, k], or the bad row
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when the shape does not describe the array
   */
  public void setTargetIndices(int[] indices, long[] shape, byte[] mask) {
    Objects.requireNonNull(indices, "indices");
    Objects.requireNonNull(shape, "shape");
    if (TargetRows.elements(shape) != indices.length)
      throw invalid(key + ": shape " + Arrays.toString(shape) + " does not describe " + indices.length + " indices");
    if (shape.length != 2 || shape[1] != topK)
      throw new ReplayStateException(key, key + ": target indices " + Arrays.toString(shape) + " do not match the layer's "
          + TargetRows.shape(shape.length > 0 ? shape[0] : 0, topK) + " (tokens, top-" + topK + ")"
          + (shape.length == 3 ? "; stacked [tokens, layers, k] data goes through ReplayRegistry.setReplayData" : ""));
    install(indices, (int) shape[0], mask);
  }

  /** Checks without installing: what the every-layer setters run for all layers before setting any. */
  TargetRows.Checked check(int[] indices, int tokens, byte[] mask) {
    if (neverReplay) throw new ReplayStateException(key, key + " is marked never-replay; no target indices can be set for it");
    if (mask != null && mask.length != tokens)
      throw new ReplayStateException(key, key + ": mask holds " + mask.length + " entries, the target has " + tokens + " tokens");
    return TargetRows.check(key, experts, topK, indices, mask, tokens, minusOneRows);
  }

  private void install(int[] indices, int tokens, byte[] mask) {
    install(tokens, check(indices, tokens, mask));
  }

  /** Installs a target that {@link #check} accepted. */
  void install(int tokens, TargetRows.Checked c) {
    setTarget(new Target(tokens, c.indices, c.mask));
  }

  private void setTarget(Target t) {
    target = t;
    if (backwardQueue == BackwardQueue.ON_SET) backward.add(t);
  }

  /**
   * CUDA: sets device target indices [tokens, k] (int32, the layer's k) and an optional device mask
   * [tokens] (uint8, 0 for none), used by {@link #routeDevice}. Device rows are validated by the kernel:
   * an invalid row surfaces at {@link MoeRouter#checkReplay()}. Rows of -1 are not rewritten here (the
   * indices stay on the device): the router applies its own {@link RouterConfig#minusOneRows()}, which
   * {@link #routeDevice} requires to be the registry's.
   *
   * @param indices device address of int32 [tokens, k]; non-0 when tokens &gt; 0
   * @param mask device address of uint8 [tokens] (0 = route that row live), or 0 for none
   * @param tokens T, {@code >= 0}
   * @throws ReplayStateException when the layer is never-replay
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a negative T or a 0 address
   */
  public void setTargetIndicesDevice(long indices, long mask, long tokens) {
    if (neverReplay) throw new ReplayStateException(key, key + " is marked never-replay; no target indices can be set for it");
    if (tokens < 0) throw invalid(key + ": tokens must be >= 0, got " + tokens);
    if (indices == 0 && tokens > 0) throw invalid(key + ": device indices must not be 0");
    setTarget(new Target(tokens, indices, mask));
  }

  /**
   * Whether a target is set.
   *
   * @return true from a successful set until {@link #clear()}
   */
  public boolean hasTarget() {
    return target != null;
  }

  /**
   * Tokens of the current target.
   *
   * @return T of the target, or -1 when none is set
   */
  public long targetTokens() {
    return target == null ? -1 : target.deviceTokens;
  }

  /**
   * Entries waiting in the backward FIFO.
   *
   * @return how many {@link ReplayAction#REPLAY_BACKWARD} calls can still pop
   */
  public int backwardQueueSize() {
    return backward.size();
  }

  /**
   * Empties the target, the backward FIFO and the recording (Megatron {@code clear_indices}); the action,
   * the options and any recording buffer stay.
   */
  public void clear() {
    target = null;
    backward.clear();
    recordedTokens = 0;
    calls = 0;
  }

  // ------------------------------------------------------------------ recording

  /**
   * Records into a caller-owned contiguous buffer [maxTokens, k] ({@code maxTokens = buffer.length / k}).
   * Clears the recording.
   *
   * @param buffer the buffer RECORD writes; a call routing more than {@code maxTokens} tokens is refused
   */
  public void setRecordBuffer(int[] buffer) {
    Objects.requireNonNull(buffer, "buffer");
    setRecordBuffer(buffer, 0, topK, buffer.length / topK);
  }

  /**
   * Records into a caller-owned strided buffer: row {@code t} of this layer is
   * {@code buffer[offset + t * rowStride .. + k]}, for {@code t < maxTokens}. A stacked buffer
   * [max_tokens, layers, k] gives layer {@code i} offset {@code i * k} and stride {@code layers * k}
   * (Megatron's static buffer; {@link ReplayRegistry#setStaticBuffer} does this for every layer).
   * Clears the recording.
   *
   * @param buffer the buffer RECORD writes
   * @param offset index of row 0's first expert, {@code >= 0}
   * @param rowStride ints between the starts of consecutive rows, {@code >= k}
   * @param maxTokens rows the buffer holds for this layer; a call that would exceed it is refused before routing
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when the buffer cannot hold {@code maxTokens} rows
   */
  public void setRecordBuffer(int[] buffer, int offset, int rowStride, int maxTokens) {
    Objects.requireNonNull(buffer, "buffer");
    if (offset < 0 || rowStride < topK || maxTokens < 0)
      throw invalid(key + ": record buffer needs offset >= 0, rowStride >= k = " + topK + ", maxTokens >= 0; got "
          + offset + ", " + rowStride + ", " + maxTokens);
    if (maxTokens > 0 && offset + (long) (maxTokens - 1) * rowStride + topK > buffer.length)
      throw invalid(key + ": record buffer of " + buffer.length + " ints cannot hold " + maxTokens + " rows of " + topK
          + " from offset " + offset + " with stride " + rowStride);
    this.recordBuffer = buffer;
    this.recordOffset = offset;
    this.recordStride = rowStride;
    this.recordCapacity = maxTokens;
    this.recordDevice = 0;
    clearRecording();
  }

  /** Back to the layer's own growing buffer (the default). Clears the recording. */
  public void clearRecordBuffer() {
    recordBuffer = null;
    recordOffset = 0;
    recordStride = topK;
    recordCapacity = -1;
    recordDevice = 0;
    clearRecording();
  }

  /**
   * CUDA: a device int32 buffer [capacityTokens, k] that RECORD in {@link #routeDevice} writes
   * (asynchronously, on the call's stream): rows [0, T) under {@link RecordMode#LATEST}, appended under
   * {@link RecordMode#APPEND}. Clears the recording.
   *
   * @param address device address of int32 [capacityTokens, k], non-0
   * @param capacityTokens rows the buffer holds, {@code >= 0}
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a 0 address or a negative capacity
   */
  public void setRecordBufferDevice(long address, long capacityTokens) {
    if (address == 0 || capacityTokens < 0) throw invalid(key + ": device recording buffer must be non-0 with capacity >= 0");
    this.recordDevice = address;
    this.recordDeviceCapacity = capacityTokens;
    this.recordBuffer = null;
    this.recordCapacity = -1;
    clearRecording();
  }

  private void clearRecording() {
    recordedTokens = 0;
    calls = 0;
  }

  /**
   * Rows recorded.
   *
   * @return the latest call's tokens ({@link RecordMode#LATEST}) or all calls' ({@link RecordMode#APPEND})
   */
  public long recordedTokens() {
    return recordedTokens;
  }

  /**
   * Whether anything was recorded since the last clear (Megatron's {@code recorded_topk_idx is not None}).
   *
   * @return true after a RECORD call, until the recording is cleared
   */
  public boolean hasRecording() {
    return calls > 0;
  }

  /**
   * Tokens of each recorded call, oldest first, to split an {@link RecordMode#APPEND} recording by call.
   *
   * @return a new array: one entry per call (one under {@link RecordMode#LATEST}), empty when nothing was recorded
   */
  public int[] recordedCallTokens() {
    return Arrays.copyOf(callTokens, calls);
  }

  /**
   * A new [recordedTokens, k] array of the host recording (what Megatron's {@code get_recorded_indices}
   * returns), or null when nothing was recorded.
   *
   * @return the recording, or null
   * @throws ReplayStateException when the recording is in device memory
   * @throws ArithmeticException when the recording exceeds one Java array
   */
  public int[] recordedIndices() {
    if (calls == 0) return null;
    if (recordDevice != 0)
      throw new ReplayStateException(key, key + ": the recording is in device memory (setRecordBufferDevice)");
    int[] out = new int[Math.toIntExact(recordedTokens * topK)];
    copyRecorded(out, 0);
    return out;
  }

  /**
   * Copies the host recording [recordedTokens, k] into {@code dst} from {@code pos}.
   *
   * @param dst the destination
   * @param pos the first index written
   * @return the ints written, {@code recordedTokens() * k}
   * @throws ReplayStateException when the recording is in device memory
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when {@code dst} is too short
   */
  public int copyRecorded(int[] dst, int pos) {
    Objects.requireNonNull(dst, "dst");
    if (recordDevice != 0)
      throw new ReplayStateException(key, key + ": the recording is in device memory (setRecordBufferDevice)");
    long n = recordedTokens * topK;
    if (pos < 0 || n > dst.length - (long) pos) throw invalid(key + ": dst holds " + dst.length + " ints from " + pos + ", needs " + n);
    for (int t = 0; t < recordedTokens; t++) System.arraycopy(recordBuffer, recordOffset + t * recordStride, dst, pos + t * topK, topK);
    return (int) n;
  }

  /** Copies the recording into rows of a stacked [T, layers, k] array at layer position {@code layer}. */
  void copyRecordedInto(int[] dst, int layer, int layers) {
    for (int t = 0; t < recordedTokens; t++)
      System.arraycopy(recordBuffer, recordOffset + t * recordStride, dst, (t * layers + layer) * topK, topK);
  }

  /** Where the next RECORD call writes its first row; checks the room first. */
  private long recordStart(long tokens, long capacity, String what) {
    long start = recordMode == RecordMode.LATEST ? 0 : recordedTokens;
    if (capacity >= 0 && start + tokens > capacity)
      throw new ReplayStateException(key, key + ": " + what + " holds " + capacity + " tokens, " + start
          + " recorded, this call routes " + tokens);
    return start;
  }

  private void recorded(long start, int tokens) {
    recordedTokens = start + tokens;
    if (recordMode == RecordMode.LATEST) calls = 0;
    if (calls == callTokens.length) callTokens = Arrays.copyOf(callTokens, 2 * calls);
    callTokens[calls++] = tokens;
  }

  // ------------------------------------------------------------------ routing

  /**
   * Routes fp32 logits [tokens, E] according to the action: live ({@link MoeRouter#route}), recorded, or
   * replayed from the target or the backward FIFO ({@link MoeRouter#replay}).
   *
   * @param router a router with this layer's E and top-k
   * @param logits [tokens, E]
   * @param tokens T; under a replay action it must equal the target's T
   * @param outIdx [tokens, k] the experts used (what the backward takes)
   * @param outWeights [tokens, k] their weights, from the live logits
   * @return the router's non-finite row count
   * @throws ReplayStateException naming the layer: no target, empty backward FIFO, a T that does not match,
   *     a recording buffer too small, or a target set on the device
   * @throws MoeRouterException from the router, or {@link Status#INVALID_ARGUMENT} for a router of another
   *     shape; the bookkeeping is unchanged when the call fails
   */
  public long route(MoeRouter router, float[] logits, int tokens, int[] outIdx, float[] outWeights) {
    return route(router, logits, null, LogitsType.FP32, tokens, outIdx, outWeights);
  }

  /**
   * Routes bf16/fp16 logits (raw 16-bit values) according to the action; see
   * {@link #route(MoeRouter, float[], int, int[], float[])}.
   *
   * @param router a router with this layer's E and top-k
   * @param logits [tokens, E], raw bf16 or fp16 bits
   * @param type {@link LogitsType#BF16} or {@link LogitsType#FP16}
   * @param tokens T; under a replay action it must equal the target's T
   * @param outIdx [tokens, k] the experts used
   * @param outWeights [tokens, k] their weights
   * @return the router's non-finite row count
   * @throws ReplayStateException naming the layer, as the fp32 overload
   * @throws MoeRouterException from the router, or for a router of another shape
   */
  public long route(MoeRouter router, short[] logits, LogitsType type, int tokens, int[] outIdx, float[] outWeights) {
    return route(router, null, logits, type, tokens, outIdx, outWeights);
  }

  private long route(MoeRouter router, float[] f32, short[] half, LogitsType type, int tokens, int[] outIdx, float[] outWeights) {
    checkRouter(router);
    switch (action) {
      case RECORD: {
        if (recordDevice != 0)
          throw new ReplayStateException(key, key + ": RECORD has a device recording buffer; use routeDevice");
        long start = recordStart(tokens, recordCapacity, "recording buffer");
        if (recordCapacity < 0) grow(start + tokens); // before routing: a failure leaves the outputs untouched
        long bad = live(router, f32, half, type, tokens, outIdx, outWeights);
        for (int t = 0; t < tokens; t++)
          System.arraycopy(outIdx, t * topK, recordBuffer, recordOffset + (int) (start + t) * recordStride, topK);
        recorded(start, tokens);
        return bad;
      }
      case REPLAY_FORWARD:
      case REPLAY_BACKWARD: {
        boolean fwd = action == ReplayAction.REPLAY_FORWARD;
        Target t = next(fwd, tokens);
        if (t.onDevice())
          throw new ReplayStateException(key, key + ": the target indices were set on the device"
              + " (setTargetIndicesDevice); use routeDevice");
        long bad = f32 != null ? router.replay(f32, tokens, t.indices, t.mask, outIdx, outWeights)
            : router.replay(half, type, tokens, t.indices, t.mask, outIdx, outWeights);
        advance(fwd, t);
        return bad;
      }
      default:
        return live(router, f32, half, type, tokens, outIdx, outWeights);
    }
  }

  private static long live(MoeRouter router, float[] f32, short[] half, LogitsType type, int tokens, int[] outIdx,
      float[] outWeights) {
    return f32 != null ? router.route(f32, tokens, outIdx, outWeights) : router.route(half, type, tokens, outIdx, outWeights);
  }

  private void grow(long rows) {
    long need = rows * topK;
    if (need > Integer.MAX_VALUE - 8) throw invalid(key + ": recording of " + rows + " tokens exceeds one Java array");
    if (recordBuffer == null || recordBuffer.length < need)
      recordBuffer = Arrays.copyOf(recordBuffer == null ? new int[0] : recordBuffer,
          (int) Math.min(Integer.MAX_VALUE - 8, Math.max(need, 2L * (recordBuffer == null ? 0 : recordBuffer.length))));
  }

  /**
   * CUDA: routes device logits according to the action, enqueued on {@code stream} (see
   * {@link MoeRouter#routeDevice}). RECORD writes the live indices straight into the device recording
   * buffer and fills {@code outIdx}/{@code outWeights} with a replay of them (a second, cheap kernel: the
   * binding has no device copy; under the non-finite policies ZERO and ERROR, whose weights and
   * rejections depend on the whole row, the live routing runs again instead), so nothing is synchronised
   * or copied to the host. Replay actions need targets set with {@link #setTargetIndicesDevice} and a
   * router whose {@link RouterConfig#minusOneRows()} is the registry's. Invalid device indices surface
   * at {@link MoeRouter#checkReplay()}.
   *
   * @param router a CUDA router with this layer's E and top-k
   * @param logits device address of [tokens, E] of {@code type}
   * @param type the logits' element type
   * @param tokens T; under a replay action it must equal the target's T
   * @param outIdx device address of int32 [tokens, k]
   * @param outWeights device address of float32 [tokens, k]
   * @param nonfiniteRows device address of one int64 that receives the non-finite row count, or 0
   * @param stream the {@code cudaStream_t} to enqueue on (0: the default stream)
   * @throws ReplayStateException naming the layer, as {@link #route(MoeRouter, float[], int, int[], float[])},
   *     or when RECORD has no device recording buffer or the target was set on the host
   * @throws MoeRouterException from the router, or {@link Status#INVALID_ARGUMENT} when a replay action's
   *     router has another {@link RouterConfig#minusOneRows()} than the registry
   */
  public void routeDevice(MoeRouter router, long logits, LogitsType type, long tokens, long outIdx, long outWeights,
      long nonfiniteRows, long stream) {
    routeDevice(router, logits, type, tokens, outIdx, outWeights, 0L, nonfiniteRows, stream);
  }

  /**
   * {@link #routeDevice(MoeRouter, long, LogitsType, long, long, long, long, long)} that also writes the
   * per-row non-finite flags to {@code outNonfiniteRowFlags} (device uint8 [tokens], or 0), which the
   * backward of a {@link NonFinitePolicy#ZERO} router takes.
   *
   * @param router a CUDA router with this layer's E and top-k
   * @param logits device address of [tokens, E] of {@code type}
   * @param type the logits' element type
   * @param tokens T; under a replay action it must equal the target's T
   * @param outIdx device address of int32 [tokens, k]
   * @param outWeights device address of float32 [tokens, k]
   * @param outNonfiniteRowFlags device address of uint8 [tokens] (1 = the row had a non-finite logit), or 0
   * @param nonfiniteRows device address of one int64 that receives the non-finite row count, or 0
   * @param stream the {@code cudaStream_t} to enqueue on (0: the default stream)
   * @throws ReplayStateException as {@link #routeDevice(MoeRouter, long, LogitsType, long, long, long, long, long)}
   * @throws MoeRouterException as {@link #routeDevice(MoeRouter, long, LogitsType, long, long, long, long, long)}
   */
  public void routeDevice(MoeRouter router, long logits, LogitsType type, long tokens, long outIdx, long outWeights,
      long outNonfiniteRowFlags, long nonfiniteRows, long stream) {
    checkRouter(router);
    switch (action) {
      case RECORD: {
        if (recordDevice == 0)
          throw new ReplayStateException(key, key + ": RECORD on the device needs setRecordBufferDevice");
        if (tokens > Integer.MAX_VALUE) throw invalid(key + ": " + tokens + " tokens in one call");
        long start = recordStart(tokens, recordDeviceCapacity, "device recording buffer");
        long slice = recordDevice + start * topK * 4L;
        router.routeDevice(logits, type, tokens, 0, 0, slice, outWeights, outNonfiniteRowFlags, nonfiniteRows, stream);
        if (router.config().nonFinite() == NonFinitePolicy.PROPAGATE)  // same weights: replay reads k logits
          router.routeDevice(logits, type, tokens, slice, 0, outIdx, outWeights, 0, 0, stream);
        else  // ZERO zeroes rows by the whole row; ERROR must not replay a recording it did not write
          router.routeDevice(logits, type, tokens, 0, 0, outIdx, outWeights, 0, 0, stream);
        recorded(start, (int) tokens);
        return;
      }
      case REPLAY_FORWARD:
      case REPLAY_BACKWARD: {
        boolean fwd = action == ReplayAction.REPLAY_FORWARD;
        Target t = next(fwd, tokens);
        if (!t.onDevice())
          throw new ReplayStateException(key, key + ": the target indices were set on the host (setTargetIndices); use route");
        MinusOneRows routers = router.config().minusOneRows();
        if (routers != minusOneRows)
          throw invalid(key + ": device targets keep their rows of -1, which the router treats by its minus_one_rows ("
              + routers + "), not the registry's (" + minusOneRows + "); build the router with minusOneRows("
              + minusOneRows + ")");
        router.routeDevice(logits, type, tokens, t.indicesAddress, t.maskAddress, outIdx, outWeights,
            outNonfiniteRowFlags, nonfiniteRows, stream);
        advance(fwd, t);
        return;
      }
      default:
        router.routeDevice(logits, type, tokens, 0, 0, outIdx, outWeights, outNonfiniteRowFlags, nonfiniteRows, stream);
    }
  }

  private void checkRouter(MoeRouter router) {
    Objects.requireNonNull(router, "router");
    RouterConfig c = router.config();
    if (c.topK() != topK || c.experts() != experts)
      throw invalid(key + " is top-" + topK + " of " + experts + " experts, the router given is top-" + c.topK() + " of "
          + c.experts());
  }

  private Target next(boolean forward, long tokens) {
    Target t = forward ? target : backward.peek();
    if (t == null)
      throw new ReplayStateException(key, forward
          ? key + ": REPLAY_FORWARD but no target indices are set (setTargetIndices)"
          : key + ": REPLAY_BACKWARD but the backward queue is empty (more recomputes than targets "
              + (backwardQueue == BackwardQueue.ON_SET ? "set" : "replayed forward") + ")");
    if (t.deviceTokens != tokens)
      throw new ReplayStateException(key, key + ": the " + (forward ? "target" : "queued") + " indices are "
          + TargetRows.shape(t.deviceTokens, topK) + ", the " + (forward ? "forward" : "backward recompute") + " routes "
          + tokens + " tokens");
    return t;
  }

  private void advance(boolean forward, Target t) {
    if (!forward) backward.poll();
    else if (backwardQueue == BackwardQueue.ON_FORWARD) backward.add(t);
  }

  private static MoeRouterException invalid(String message) {
    return new MoeRouterException(Status.INVALID_ARGUMENT, message);
  }

  @Override
  public String toString() {
    return "RouterReplay{" + key + ", top-" + topK + " of " + experts + ", " + action + (neverReplay ? ", never-replay" : "")
        + (target != null ? ", target [" + target.deviceTokens + ", " + topK + "]" : "") + ", backward queue=" + backward.size()
        + ", recorded=" + recordedTokens + "}";
  }
}
