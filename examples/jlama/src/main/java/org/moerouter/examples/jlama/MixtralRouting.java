package org.moerouter.examples.jlama;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Locale;
import java.util.Objects;
import org.moerouter.Backend;
import org.moerouter.MoeRouter;
import org.moerouter.RouterConfig;
import org.moerouter.replay.ReplayAction;
import org.moerouter.replay.ReplayRegistry;
import org.moerouter.replay.RouterReplay;
import org.moerouter.trace.RoutingTrace;
import org.moerouter.trace.TraceFiles;

/**
 * Everything this example asks of moe-router, in one place: Mixtral's router, one replay state per MoE
 * layer, and R3 traces (record a rollout, replay it in another run).
 *
 * <p>Mixtral routes by softmax over all experts, top-k, then renormalises the k probabilities; that is
 * moe-router's default "softmax post" (softmax over the k selected logits, ROUTING_SPEC sections 1 and 3):
 * the same experts, weights equal up to float rounding.
 *
 * <pre>{@code
 * try (MixtralRouting routing = new MixtralRouting(8, 2, 32, Backend.AUTO)) {
 *   routing.record(4096);                         // rollout: live routing, every layer recorded
 *   generate(model);                              // MoeRouterFeedForward calls route(layer, ...)
 *   routing.writeRecording("mixtral", trace);     // [tokens, layers, k] safetensors
 *   routing.replay(TraceFiles.read(trace), 0);    // another run: the recorded experts, live weights
 * }
 * }</pre>
 *
 * <p>Layers are the model's layer numbers {@code 0 .. layers-1}. A forward call routes its tokens in every
 * layer once, in order; replay hands each layer the next tokens of the replayed sample, so the replaying
 * run may cut the sequence into forward calls differently from the recording one (prefill + one token per
 * decode step there, one batch here). Not thread-safe: one model, one thread of forward calls.
 */
public final class MixtralRouting implements ExpertRouter, AutoCloseable {
  /**
   * Receives every call's gate logits [tokens, E] and the routing actually used, [tokens, k] (tests and
   * diagnostics). The arrays are the layer's own and are reused by its next call: copy what you keep.
   */
  public interface Observer {
    void routed(int layer, int tokens, float[] logits, int[] idx, float[] weights);
  }

  /** An observer that stacks the experts used by every layer into a trace [tokens, layers, k]. */
  public static final class Log implements Observer {
    private final int topK;
    private final int[][] rows;
    private final int[] filled;

    public Log(int layers, int topK) {
      this.topK = topK;
      this.rows = new int[layers][64 * topK];
      this.filled = new int[layers];
    }

    @Override
    public void routed(int layer, int tokens, float[] logits, int[] idx, float[] weights) {
      int n = tokens * topK;
      if (filled[layer] + n > rows[layer].length)
        rows[layer] = Arrays.copyOf(rows[layer], Math.max(filled[layer] + n, 2 * rows[layer].length));
      System.arraycopy(idx, 0, rows[layer], filled[layer], n);
      filled[layer] += n;
    }

    /** The routing seen so far as a one-sample trace; every layer must have routed the same tokens. */
    public RoutingTrace trace(String model, int experts, String scoreFunction) {
      int layers = rows.length;
      for (int l = 1; l < layers; l++)
        if (filled[l] != filled[0])
          throw new IllegalStateException("layer " + l + " routed " + filled[l] / topK + " tokens, layer 0 " + filled[0] / topK);
      return stack(model, experts, topK, scoreFunction, rows, filled[0] / topK);
    }
  }

  private enum Mode { LIVE, RECORD, REPLAY }

  private final MoeRouter router;
  private final ReplayRegistry registry = new ReplayRegistry();
  private final RouterReplay[] layerReplay;
  private final int experts;
  private final int topK;
  private Mode mode = Mode.LIVE;
  private RoutingTrace replayTrace;
  private long replayFirst;
  private long replayEnd;
  private int[] replayLayer;  // model layer -> position in replayTrace
  private final long[] replayed;  // tokens replayed so far, per layer
  private final int[] calls;  // forward calls per layer, the replay "micro-batch" number in error messages
  private final int[][] targets;  // per layer, reused: RouterReplay lets go of a target at clear()
  private Observer observer;

  /** Mixtral's router config: softmax post (the default), top-k of E. */
  public static RouterConfig mixtralConfig(int experts, int topK) {
    return RouterConfig.builder(experts, topK).build();
  }

  public MixtralRouting(int experts, int topK, int layers, Backend backend) {
    if (layers < 1) throw new IllegalArgumentException("MixtralRouting needs at least one layer, got " + layers);
    this.router = MoeRouter.create(mixtralConfig(experts, topK), Objects.requireNonNull(backend, "backend"));
    this.experts = experts;
    this.topK = topK;
    this.layerReplay = new RouterReplay[layers];
    for (int l = 0; l < layers; l++) layerReplay[l] = registry.addLayer(l);
    this.replayed = new long[layers];
    this.calls = new int[layers];
    this.targets = new int[layers][0];
  }

  public int experts() {
    return experts;
  }

  public int topK() {
    return topK;
  }

  public int layers() {
    return layerReplay.length;
  }

  /** The moe-router backend doing the work (CPU when the native library loads, else JAVA). */
  public Backend backend() {
    return router.backend();
  }

  public void observe(Observer o) {
    this.observer = o;
  }

  /** Live routing, nothing recorded or replayed. */
  public void live() {
    registry.clear();
    registry.setAction(ReplayAction.NONE);
    mode = Mode.LIVE;
    replayTrace = null;
  }

  /**
   * Live routing that records every layer's experts, for at most {@code capacityTokens} tokens (all
   * forward calls together, as run: prefill rows then one row per decode step).
   */
  public void record(int capacityTokens) {
    if (capacityTokens < 1) throw new IllegalArgumentException("record capacity must be >= 1 token, got " + capacityTokens);
    live();
    for (RouterReplay r : layerReplay) r.setRecordBuffer(new int[Math.multiplyExact(capacityTokens, topK)]);
    registry.setAction(ReplayAction.RECORD);
    mode = Mode.RECORD;
  }

  /** The recording so far as a one-sample trace [tokens, layers, k]; every layer must have seen the same tokens. */
  public RoutingTrace recording(String model) {
    if (mode != Mode.RECORD) throw new IllegalStateException("no recording: call record() before the rollout");
    long tokens = layerReplay[0].recordedTokens();
    int layers = layerReplay.length;
    for (RouterReplay r : layerReplay)
      if (r.recordedTokens() != tokens)
        throw new IllegalStateException("layer " + r.layerId() + " recorded " + r.recordedTokens() + " tokens, layer 0 "
            + tokens + ": a forward call stopped between layers");
    int[][] perLayer = new int[layers][];
    for (int l = 0; l < layers; l++) perLayer[l] = layerReplay[l].recordBuffer();
    return stack(model, experts, topK, scoreFunction(), perLayer, Math.toIntExact(tokens));
  }

  /** The score function name traces carry ("softmax"). */
  public String scoreFunction() {
    return router.config().scoreFunction().name().toLowerCase(Locale.ROOT);
  }

  /** Per-layer [tokens, k] rows of layers 0..L-1 as a one-sample trace [tokens, layers, k]. */
  private static RoutingTrace stack(String model, int experts, int topK, String scoreFunction, int[][] perLayer, int tokens) {
    int layers = perLayer.length;
    int[] stacked = new int[Math.multiplyExact(tokens, layers * topK)];
    for (int l = 0; l < layers; l++)
      for (int i = 0; i < tokens; i++) System.arraycopy(perLayer[l], i * topK, stacked, (i * layers + l) * topK, topK);
    int[] ids = new int[layers];
    for (int l = 0; l < layers; l++) ids[l] = l;
    return RoutingTrace.builder(model, experts, topK, ids, scoreFunction).addSample(stacked).build();
  }

  /** Writes {@link #recording} as a trace file (safetensors, readable from Python). */
  public RoutingTrace writeRecording(String model, Path file) throws IOException {
    RoutingTrace t = recording(model);
    TraceFiles.write(t, file);
    return t;
  }

  /**
   * From now on every layer replays sample {@code sample} of {@code trace}: each forward call takes the
   * layer's next recorded tokens as forced experts, weights from this run's live logits.
   */
  public void replay(RoutingTrace trace, int sample) {
    Objects.requireNonNull(trace, "trace");
    if (trace.experts() != experts || trace.topK() != topK)
      throw new IllegalArgumentException("trace routes " + trace.experts() + " experts top-" + trace.topK()
          + ", this model " + experts + " top-" + topK);
    int[] pos = new int[layerReplay.length];
    for (int l = 0; l < pos.length; l++) {
      pos[l] = trace.layerIndex(l);
      if (pos[l] < 0) throw new IllegalArgumentException("trace has no layer " + l + " (it holds layers "
          + Arrays.toString(trace.layerIds()) + ")");
    }
    long first = trace.sampleOffset(sample);  // checks the sample number
    live();
    registry.setAction(ReplayAction.REPLAY_FORWARD);
    mode = Mode.REPLAY;
    replayTrace = trace;
    replayLayer = pos;
    replayFirst = first;
    replayEnd = trace.sampleOffset(sample + 1);
    Arrays.fill(replayed, 0);
    Arrays.fill(calls, 0);
  }

  /**
   * Replays the same sample again from its first token: a second pass over the same sequence (a
   * log-probability pass, then the training pass) gets the same experts without reading the trace anew.
   */
  public void rewind() {
    if (mode != Mode.REPLAY) throw new IllegalStateException("rewind() needs replay mode (call replay(trace, sample) first)");
    Arrays.fill(replayed, 0);
  }

  /** Tokens replayed so far in {@code layer} since {@link #replay} or {@link #rewind}. */
  public long replayedTokens(int layer) {
    return replayed[layer];
  }

  @Override
  public void route(int layer, float[] logits, int tokens, int[] outIdx, float[] outWeights) {
    if (layer < 0 || layer >= layerReplay.length)
      throw new IllegalArgumentException("layer " + layer + " outside [0, " + layerReplay.length + ")");
    RouterReplay r = layerReplay[layer];
    if (mode == Mode.REPLAY) {
      long from = replayFirst + replayed[layer];
      if (from + tokens > replayEnd)
        throw new IllegalStateException("layer " + layer + ": replay past the end of the recorded sample ("
            + (replayEnd - replayFirst) + " tokens, " + replayed[layer] + " replayed, this call routes " + tokens + ")");
      // Exactly [tokens, k]: a target is the whole of its array.
      if (targets[layer].length != tokens * topK) targets[layer] = new int[tokens * topK];
      int[] target = targets[layer];
      replayTrace.copyTokens(from, from + tokens, replayLayer[layer], replayLayer[layer] + 1, target, 0);
      r.setTarget(calls[layer], target, null, tokens);
      try {
        r.route(router, logits, tokens, outIdx, outWeights);
      } finally {
        // REPLAY_FORWARD queues the entry for a backward recompute; an inference engine has none. This also
        // drops RouterReplay's reference to the target, so the array is free for the next call.
        r.clear();
      }
      replayed[layer] += tokens;
    } else {
      r.route(router, logits, tokens, outIdx, outWeights);
    }
    calls[layer]++;
    if (observer != null) observer.routed(layer, tokens, logits, outIdx, outWeights);
  }

  @Override
  public void close() {
    router.close();
  }

  @Override
  public String toString() {
    return "MixtralRouting{" + mode + ", " + router + ", layers=" + layerReplay.length + "}";
  }
}
