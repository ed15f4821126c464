// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Locale;
import java.util.Objects;
import org.moerouter.Backend;
import org.moerouter.MoeRouter;
import org.moerouter.RouterConfig;
import org.moerouter.replay.LayerKey;
import org.moerouter.replay.RecordMode;
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
 * moe-router's default "softmax post" (softmax over the k selected logits, docs/semantics.md sections 1 and 3):
 * the same experts, weights equal up to float rounding.
 *
 * <pre>{@code
 * try (MixtralRouting routing = new MixtralRouting(8, 2, 32, Backend.AUTO)) {
 *   routing.record();                             // rollout: live routing, every layer recorded
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
      int tokens = filled[0] / topK;
      int[] stacked = new int[Math.multiplyExact(tokens, layers * topK)];
      int[] ids = new int[layers];
      for (int l = 0; l < layers; l++) {
        ids[l] = l;
        for (int i = 0; i < tokens; i++) System.arraycopy(rows[l], i * topK, stacked, (i * layers + l) * topK, topK);
      }
      return RoutingTrace.builder(model, experts, topK, LayerKey.decoders(ids), scoreFunction).addSample(stacked).build();
    }
  }

  private enum Mode { LIVE, RECORD, REPLAY }

  private final MoeRouter router;
  // APPEND: a rollout routes each layer once for the prompt, then once per decode step; all are kept.
  private final ReplayRegistry registry = ReplayRegistry.builder().recordMode(RecordMode.APPEND).build();
  private final LayerKey[] keys;
  private final RouterReplay[] layerReplay;
  private final int experts;
  private final int topK;
  private Mode mode = Mode.LIVE;
  private RoutingTrace replayTrace;
  private long replayFirst;
  private long replayEnd;
  private int[] replayLayer;  // model layer -> position in replayTrace
  private final long[] replayed;  // tokens replayed so far, per layer
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
    this.keys = new LayerKey[layers];
    this.layerReplay = new RouterReplay[layers];
    for (int l = 0; l < layers; l++) {
      keys[l] = LayerKey.decoder(l);
      layerReplay[l] = registry.addLayer(keys[l], router.config());
    }
    this.replayed = new long[layers];
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
   * Live routing that records every layer's experts, all forward calls in order (prefill rows, then one row
   * per decode step), into the layers' own growing buffers.
   */
  public void record() {
    live();
    registry.setAction(ReplayAction.RECORD);
    mode = Mode.RECORD;
  }

  /** The recording so far as a one-sample trace [tokens, layers, k]; every layer must have seen the same tokens. */
  public RoutingTrace recording(String model) {
    if (mode != Mode.RECORD) throw new IllegalStateException("no recording: call record() before the rollout");
    return RoutingTrace.builder(model, experts, topK, keys, scoreFunction()).addSample(registry.recordedStacked(keys)).build();
  }

  /** The score function name traces carry ("softmax"). */
  public String scoreFunction() {
    return router.config().scoreFunction().name().toLowerCase(Locale.ROOT);
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
      pos[l] = trace.layerIndex(keys[l]);
      if (pos[l] < 0) throw new IllegalArgumentException("trace has no " + keys[l] + " (it holds "
          + Arrays.toString(trace.layerKeys()) + ")");
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
      // Targets are exactly [tokens, k]: the array is the target.
      if (targets[layer].length != tokens * topK) targets[layer] = new int[tokens * topK];
      int[] target = targets[layer];
      replayTrace.copyTokens(from, from + tokens, replayLayer[layer], replayLayer[layer] + 1, target, 0);
      r.setTargetIndices(target, tokens, null);
      try {
        r.route(router, logits, tokens, outIdx, outWeights);
      } finally {
        // Each set also queues the target for a backward recompute (ON_SET); an inference engine has none, so
        // the queue is emptied, and with it RouterReplay's reference to the array, free for the next call.
        r.clear();
      }
      replayed[layer] += tokens;
    } else {
      r.route(router, logits, tokens, outIdx, outWeights);
    }
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
