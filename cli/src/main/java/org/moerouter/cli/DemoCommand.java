// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Locale;
import java.util.Set;
import java.util.SplittableRandom;
import org.moerouter.Backend;
import org.moerouter.LogitsType;
import org.moerouter.MoeRouter;
import org.moerouter.RouterConfig;
import org.moerouter.RoutingAgreement;
import org.moerouter.ScoreFunction;
import org.moerouter.replay.LayerKey;
import org.moerouter.replay.ReplayAction;
import org.moerouter.replay.ReplayRegistry;
import org.moerouter.replay.RouterReplay;
import org.moerouter.trace.RoutingTrace;
import org.moerouter.trace.TraceFiles;

/**
 * {@code moe-router demo}: routing replay (R3) end to end on a simulated MoE router stack.
 *
 * <p>Two engines compute the same router logits differently, as an inference server and a trainer
 * do: the "inference" engine multiplies bf16-rounded hidden states and router weights with a tiled
 * summation and emits bf16 logits; the "training" engine works in fp32 with the opposite summation
 * order. The rollout records its routing per layer into a trace file; the training pass routes live
 * (and disagrees on a fraction of tokens) and then replays the trace (and agrees exactly): per micro-batch
 * every layer's target is set once, a log-prob pass and a training pass replay it without consuming it, and
 * the activation recompute pops the backward queues, as a Megatron trainer does.
 */
final class DemoCommand {
  private DemoCommand() {}

  static final String OPTIONS = "[--model qwen3-moe|deepseek-v3] [--layers N] [--tokens T] [--micro-batches M]"
      + " [--hidden H] [--seed S] [--backend B] [--out DIR] [--progress|--no-progress]";

  static final String HELP = String.join("\n",
      "usage: moe-router demo " + OPTIONS,
      "Routing replay (R3) end to end: an inference engine records its routing into a trace, a training",
      "engine with different numerics routes live (and disagrees on some tokens), then replays the trace",
      "(and agrees exactly). Prints the mismatch per layer, replay vs live time, and the trace it wrote.",
      "  --model NAME        qwen3-moe (128 experts, top-8 softmax; default) or deepseek-v3 (256, top-8,",
      "                      sigmoid + bias, 8 groups keep 4, scale 2.5)",
      "  --layers N          MoE layers (default 12)",
      "  --tokens T          tokens per step (default 4096), a multiple of --micro-batches",
      "  --micro-batches M   training micro-batches, also the trace's samples (default 2)",
      "  --hidden H          hidden size of the simulated router input (default 128)",
      "  --seed S            random seed (default 2026)",
      "  --backend B         java, cpu, cuda, native (cpu or cuda) or auto (default)",
      "  --out DIR           where the trace goes (default ./moe-router-demo)",
      "  --progress          progress bar on stderr even when it is not a terminal",
      "  --no-progress       no progress output (default: a bar on a terminal, plain lines otherwise)");

  static int run(String[] argv, PrintStream out, PrintStream err) throws IOException {
    Args a = Args.command(argv, Set.of("backend", "layers", "tokens", "hidden", "model", "out", "seed", "micro-batches"),
        Set.of("progress", "no-progress"), HELP, out);
    if (a == null) return 0;
    if (a.flag("progress") && a.flag("no-progress")) throw new Args.UsageException("--progress and --no-progress conflict");
    Backend backend = Main.backend(a.get("backend"));
    int layers = positive(a, "layers", 12);
    int tokens = positive(a, "tokens", 4096);
    int hidden = positive(a, "hidden", 128);
    int microBatches = positive(a, "micro-batches", 2);
    if (tokens % microBatches != 0) throw new Args.UsageException("--tokens must be a multiple of --micro-batches");
    long seed = a.intValue("seed", 2026);
    String model = a.get("model") == null ? "qwen3-moe" : a.get("model");
    RouterConfig config;
    switch (model) {
      case "qwen3-moe":  // 128 experts, top-8, softmax with renormalised top-k
        config = RouterConfig.builder(128, 8).build();
        break;
      case "deepseek-v3":  // 256 experts, top-8, sigmoid + bias, 8 groups keep 4, scale 2.5
        config = RouterConfig.builder(256, 8).scoreFunction(ScoreFunction.SIGMOID)
            .expertBias(gaussian(new SplittableRandom(seed + 99), 256, 0.02)).groups(8, 4).scale(2.5f).build();
        break;
      default:
        throw new Args.UsageException("--model must be qwen3-moe or deepseek-v3, got '" + model + "'");
    }
    Path outDir = Paths.get(a.get("out") == null ? "moe-router-demo" : a.get("out"));
    Progress progress = new Progress(err, a.flag("no-progress") ? Progress.Mode.OFF
        : a.flag("progress") || stderrIsTerminal() ? Progress.Mode.BAR : Progress.Mode.LINES);
    final int e = config.experts(), k = config.topK();

    out.printf(Locale.ROOT, "R3 routing replay demo: %s router (E=%d, k=%d%s), %d layers, %d tokens, hidden %d%n", model, e,
        k, config.grouped() ? ", groups " + config.groups() + "/" + config.groupTopK() : "", layers, tokens, hidden);

    int[] layerIds = new int[layers];
    for (int l = 0; l < layers; l++) layerIds[l] = l;
    short[][] inferenceLogits = new short[layers][];
    float[][] trainingLogits = new float[layers][];
    SimulatedStack stack = new SimulatedStack(seed, tokens, hidden, e);
    for (int l = 0; l < layers; l++) {
      stack.nextLayer();
      inferenceLogits[l] = stack.inferenceLogits();
      trainingLogits[l] = stack.trainingLogits();
      progress.update("simulating layers", l + 1, layers);
    }
    progress.done();

    try (MoeRouter inference = MoeRouter.create(config, backend); MoeRouter training = MoeRouter.create(config, backend)) {
      out.println("backend: " + training.backend());
      int[] idx = new int[tokens * k];
      float[] w = new float[tokens * k];

      // ---- rollout: the inference engine routes bf16 logits and records every layer (R3) into one
      // stacked [tokens, layers, k] buffer, each layer writing its strided slice (Megatron's static buffer).
      ReplayRegistry rollout = new ReplayRegistry();
      LayerKey[] keys = LayerKey.decoders(layerIds);
      for (LayerKey key : keys) rollout.addLayer(key, config);
      int[] recorded = new int[tokens * layers * k];  // [tokens, layers, k]
      rollout.setStaticBuffer(recorded, tokens);
      rollout.setAction(ReplayAction.RECORD);
      for (int l = 0; l < layers; l++) {
        rollout.layer(keys[l]).route(inference, inferenceLogits[l], LogitsType.BF16, tokens, idx, w);
        progress.update("inference rollout", l + 1, layers);
      }
      progress.done();
      int samples = microBatches;
      int perSample = tokens / samples;
      RoutingTrace.Builder tb = RoutingTrace.builder(model + "-sim", e, k, layerIds, config.scoreFunction().name().toLowerCase(Locale.ROOT));
      for (int s = 0; s < samples; s++) tb.addSample(recorded, s * perSample * layers * k, perSample);
      Files.createDirectories(outDir);
      Path tracePath = outDir.resolve("r3-trace.safetensors");
      TraceFiles.write(tb.build(), tracePath);

      // ---- training: read the trace back (memory-mapped) and run the trainer's passes per micro-batch:
      // set every layer's target once, a log-prob pass and a training pass that both replay it without
      // consuming it, and after all forwards the activation recompute popping the backward queues.
      RoutingTrace trace = TraceFiles.open(tracePath);
      int[] live = new int[tokens * layers * k];
      int[] replayed = new int[tokens * layers * k];
      int[] trainReplayed = new int[tokens * layers * k];
      ReplayRegistry trainer = new ReplayRegistry();
      for (LayerKey key : keys) trainer.addLayer(key, config);
      int mbTokens = tokens / microBatches;
      int[] mbIdx = new int[mbTokens * k];
      float[] mbW = new float[mbTokens * k];
      float[] mbLogits = new float[mbTokens * e];
      int[] target = new int[mbTokens * layers * k];
      for (int mb = 0; mb < microBatches; mb++) {
        trace.copySample(mb, 0, layers, target, 0);
        trainer.setReplayData(target, new long[] {mbTokens, layers, k}, keys, null);
        for (int l = 0; l < layers; l++) {
          System.arraycopy(trainingLogits[l], mb * mbTokens * e, mbLogits, 0, mbTokens * e);
          RouterReplay layer = trainer.layer(keys[l]);
          layer.setAction(ReplayAction.NONE);  // without replay: what the trainer would pick itself
          layer.route(training, mbLogits, mbTokens, mbIdx, mbW);
          scatter(mbIdx, live, mb * mbTokens, mbTokens, l, layers, k);
          layer.setAction(ReplayAction.REPLAY_FORWARD);  // log-prob pass
          layer.route(training, mbLogits, mbTokens, mbIdx, mbW);
          scatter(mbIdx, replayed, mb * mbTokens, mbTokens, l, layers, k);
          layer.route(training, mbLogits, mbTokens, mbIdx, mbW);  // training pass: the same target again
          scatter(mbIdx, trainReplayed, mb * mbTokens, mbTokens, l, layers, k);
        }
        progress.update("training forward", mb + 1, microBatches);
      }
      // Activation recompute in the backward pass takes the queued targets in FIFO order.
      trainer.setAction(ReplayAction.REPLAY_BACKWARD);
      for (int mb = 0; mb < microBatches; mb++)
        for (int l = layers - 1; l >= 0; l--) {
          System.arraycopy(trainingLogits[l], mb * mbTokens * e, mbLogits, 0, mbTokens * e);
          trainer.layer(keys[l]).route(training, mbLogits, mbTokens, mbIdx, mbW);
        }
      trainer.checkAllConsumed();
      trainer.clear();
      progress.done();
      if (!java.util.Arrays.equals(replayed, trainReplayed)) {
        out.println("ERROR: the training pass did not replay what the log-prob pass replayed");
        return 1;
      }

      RoutingAgreement.Result without = RoutingAgreement.compare(recorded, live, tokens, layers, k, e);
      RoutingAgreement.Result with = RoutingAgreement.compare(recorded, replayed, tokens, layers, k, e);
      out.println();
      out.println("layer  differing tokens (no replay)  mean top-k overlap  differing tokens (replay)");
      for (int l = 0; l < layers; l++)
        out.printf(Locale.ROOT, "%5d  %27.2f%%  %18.4f  %25.2f%%%n", l, 100 * without.differingRowFraction(l),
            without.meanOverlap(l), 100 * with.differingRowFraction(l));
      out.printf(Locale.ROOT, "all    %27.2f%%  %18.4f  %25.2f%%%n", 100 * without.differingRowFraction(),
          without.meanOverlap(), 100 * with.differingRowFraction());
      out.printf(Locale.ROOT, "tokens routed differently in at least one layer: %.2f%% without replay, %.2f%% with replay%n",
          100 * without.differingTokenFraction(), 100 * with.differingTokenFraction());
      if (with.differingRows() != 0) {
        out.println("ERROR: replay did not reproduce the recorded routing");
        return 1;
      }

      double[] t = timeLiveVsReplay(training, trainingLogits, trace, tokens, layers, k, progress);
      out.printf(Locale.ROOT, "routing time per layer (training engine, %s): live %.1f us, replay %.1f us, replay/live %.2fx%n",
          training.backend(), t[0] / 1e3, t[1] / 1e3, t[1] / t[0]);
      out.printf(Locale.ROOT, "trace: %s (%d samples, %d tokens, %d layers, %s indices, %d bytes)%n", tracePath,
          trace.samples(), trace.totalTokens(), trace.layers(), trace.indexDtype(), Files.size(tracePath));
    }
    return 0;
  }

  /** Median over rounds of the per-layer time of a live and a replayed routing call (ns). */
  static double[] timeLiveVsReplay(MoeRouter router, float[][] logits, RoutingTrace trace, int tokens, int layers, int k,
      Progress progress) {
    int[][] replay = new int[layers][tokens * k];
    for (int l = 0; l < layers; l++) trace.copyTokens(0, tokens, l, l + 1, replay[l], 0);  // [tokens, 1, k]
    int[] idx = new int[tokens * k];
    float[] w = new float[tokens * k];
    int rounds = 15;
    double[] liveNs = new double[rounds], replayNs = new double[rounds];
    for (int r = -3; r < rounds; r++) {  // three warm-up rounds
      long a = System.nanoTime();
      for (int l = 0; l < layers; l++) router.route(logits[l], tokens, idx, w);
      long b = System.nanoTime();
      for (int l = 0; l < layers; l++) router.replay(logits[l], tokens, replay[l], null, idx, w);
      long c = System.nanoTime();
      if (r >= 0) {
        liveNs[r] = (double) (b - a) / layers;
        replayNs[r] = (double) (c - b) / layers;
      }
      progress.update("timing live vs replay", r + 4, rounds + 3);
    }
    progress.done();
    java.util.Arrays.sort(liveNs);
    java.util.Arrays.sort(replayNs);
    return new double[] {liveNs[rounds / 2], replayNs[rounds / 2]};
  }

  /** Copies [tokens, k] indices of one layer into rows [from, from + tokens) of a [T, layers, k] array. */
  static void scatter(int[] src, int[] dst, int from, int tokens, int layer, int layers, int k) {
    for (int t = 0; t < tokens; t++) System.arraycopy(src, t * k, dst, ((from + t) * layers + layer) * k, k);
  }

  static int positive(Args a, String name, int dflt) {
    int v = a.intValue(name, dflt);
    if (v < 1) throw new Args.UsageException("--" + name + " must be >= 1, got " + v);
    return v;
  }

  static float[] gaussian(SplittableRandom rnd, int n, double sd) {
    float[] x = new float[n];
    for (int i = 0; i < n; i++) x[i] = (float) (rnd.nextGaussian() * sd);
    return x;
  }

  /**
   * Hidden states of a residual stream and one router weight matrix per layer; the two engines
   * compute logits = h W with different precision and summation order.
   */
  static final class SimulatedStack {
    final SplittableRandom rnd;
    final int tokens, hidden, experts;
    final float[] h;
    float[] weights;  // [experts, hidden]

    SimulatedStack(long seed, int tokens, int hidden, int experts) {
      this.rnd = new SplittableRandom(seed);
      this.tokens = tokens;
      this.hidden = hidden;
      this.experts = experts;
      h = gaussian(rnd, tokens * hidden, 1.0);
    }

    void nextLayer() {
      for (int i = 0; i < h.length; i++) h[i] = (float) (h[i] * 0.9 + rnd.nextGaussian() * 0.45);
      weights = gaussian(rnd, experts * hidden, 1.0 / Math.sqrt(hidden));
    }

    /** bf16 operands, fp32 accumulation in tiles of 32 summed pairwise, bf16 output. */
    short[] inferenceLogits() {
      float[] hb = new float[h.length], wb = new float[weights.length];
      for (int i = 0; i < h.length; i++) hb[i] = bf16Round(h[i]);
      for (int i = 0; i < weights.length; i++) wb[i] = bf16Round(weights[i]);
      short[] out = new short[tokens * experts];
      float[] tiles = new float[(hidden + 31) / 32];
      for (int t = 0; t < tokens; t++)
        for (int x = 0; x < experts; x++) {
          for (int tile = 0; tile < tiles.length; tile++) {
            float s = 0;
            for (int d = tile * 32; d < Math.min(hidden, tile * 32 + 32); d++) s += hb[t * hidden + d] * wb[x * hidden + d];
            tiles[tile] = s;
          }
          for (int n = tiles.length; n > 1; n = (n + 1) / 2) {  // pairwise tree over the tiles
            for (int i = 0; i < n / 2; i++) tiles[i] = tiles[2 * i] + tiles[2 * i + 1];
            if (n % 2 == 1) tiles[n / 2] = tiles[n - 1];
          }
          float total = tiles[0];
          out[t * experts + x] = bf16Bits(total);
        }
      return out;
    }

    /** fp32 operands, sequential fp32 accumulation in reverse order. */
    float[] trainingLogits() {
      float[] out = new float[tokens * experts];
      for (int t = 0; t < tokens; t++)
        for (int x = 0; x < experts; x++) {
          float s = 0;
          for (int d = hidden - 1; d >= 0; d--) s += h[t * hidden + d] * weights[x * hidden + d];
          out[t * experts + x] = s;
        }
      return out;
    }

    static short bf16Bits(float f) {
      int bits = Float.floatToRawIntBits(f);
      bits += 0x7FFF + ((bits >>> 16) & 1);  // round to nearest even (inputs are finite)
      return (short) (bits >>> 16);
    }

    static float bf16Round(float f) {
      return Float.intBitsToFloat(bf16Bits(f) << 16);
    }
  }

  /**
   * Java cannot ask whether stderr is a terminal; the launcher can ({@code [ -t 2 ]}) and says so in
   * {@code -Dmoerouter.stderrIsTerminal}. Without it, a console (stdin and stdout on a terminal) is the guess.
   */
  static boolean stderrIsTerminal() {
    String p = System.getProperty("moerouter.stderrIsTerminal");
    return p != null ? Boolean.parseBoolean(p) : System.console() != null;
  }

  /**
   * Progress on stderr: a redrawn bar on a terminal; plain lines when stderr is a pipe or a log (a
   * line when a phase ends, and at most every {@link #LINE_INTERVAL_NS} in between), so a long run
   * never sits silent.
   */
  static final class Progress {
    enum Mode { OFF, BAR, LINES }

    static final long LINE_INTERVAL_NS = 5_000_000_000L;
    final PrintStream err;
    final Mode mode;
    String shown;
    long lastLine = System.nanoTime();

    Progress(PrintStream err, Mode mode) {
      this.err = err;
      this.mode = mode;
    }

    void update(String what, int done, int total) {
      if (mode == Mode.LINES) {
        long now = System.nanoTime();
        if (done < total && now - lastLine < LINE_INTERVAL_NS) return;
        lastLine = now;
        err.printf(Locale.ROOT, "moe-router demo: %s %d/%d%n", what, done, total);
        return;
      }
      if (mode != Mode.BAR) return;
      int width = 30, filled = (int) ((long) width * done / Math.max(1, total));
      err.printf(Locale.ROOT, "\r%-24s [%s%s] %3d%%", what, "#".repeat(filled), ".".repeat(width - filled),
          100L * done / Math.max(1, total));
      shown = what;
    }

    void done() {
      if (mode == Mode.BAR && shown != null) err.print("\r" + " ".repeat(70) + "\r");
      shown = null;
    }
  }
}
