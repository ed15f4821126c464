// SPDX-License-Identifier: Apache-2.0
package org.moerouter.bench;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.moerouter.Backend;
import org.moerouter.MoeRouter;
import org.moerouter.NativeLibrary;
import org.moerouter.RouterConfig;
import org.moerouter.ScoreFunction;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.TearDown;

/**
 * The CPU goals of issue 16 in one JMH run (docs/cpu-design.md): this library's CPU backend next to its
 * memory floor, ONNX Runtime (the peer baseline a Java engine would use instead) and the pure-Java
 * backend, live and replay, on 1 and 2 threads. fp32 logits, Gaussian (std 2).
 *
 * <p>{@code impl}: {@code moe} (CPU backend, {@code float[]} arrays, {@link MoeRouter#setCpuThreads});
 * {@code floor} (a plain native loop reading the bytes the call must read and writing its outputs:
 * every logit for live routing, the k replayed logits and the index row for replay; on {@code threads}
 * threads, rows split evenly); {@code ort} (ONNX Runtime, graphs from {@link OnnxGraphs}, intra-op threads =
 * {@code threads}: live = TopK then softmax of the k values for softmax configs, the grouped sigmoid+bias
 * graph for e256k8g; replay = gather the k logits first); {@code ortSoftmaxTopk} (live softmax configs:
 * the full softmax then TopK and renormalise); {@code java} (the pure-Java backend, single-threaded).
 * Scores are ns per call; {@link BenchMain} divides by T.
 */
public class CpuGoalsBenchmark extends ShortRun {
  @Param({"e64k6", "e128k8", "e512k10", "e256k8g"})
  public String config;

  @Param({"4096", "65536"})
  public int tokens;

  @Param({"1", "2"})
  public int threads;

  @Param({"moe", "floor", "ort", "ortSoftmaxTopk", "java"})
  public String impl;

  private RouterConfig rc;
  private MoeRouter router;
  private float[] logits;
  private int[] replayIdx;
  private int[] outIdx;
  private float[] outWeights;
  // floor
  private FloatPointer nLogits;
  private IntPointer nIdx;
  private IntPointer nOutIdx;
  private FloatPointer nOutWeights;
  private ExecutorService pool;
  // ONNX Runtime
  private OrtEnvironment env;
  private OrtSession liveSession;
  private OrtSession replaySession;
  private OnnxTensor logitsTensor;
  private OnnxTensor idxTensor;

  @Setup(Level.Trial)
  public void setup() throws OrtException {
    rc = BenchInputs.config(config);
    int e = rc.experts(), k = rc.topK();
    logits = BenchInputs.logitsF32(Math.multiplyExact(tokens, e), 0x5EED_0000L + 31L * e + tokens);
    outIdx = new int[tokens * k];
    outWeights = new float[tokens * k];
    // Replay input: the live selection of the same logits (so replay computes the weights live routing did).
    replayIdx = new int[tokens * k];
    try (MoeRouter ref = MoeRouter.create(rc, NativeLibrary.loaded() ? Backend.CPU : Backend.JAVA)) {
      ref.route(logits, tokens, replayIdx, new float[tokens * k]);
    }
    switch (impl) {
      case "moe":
        MoeRouter.setCpuThreads(threads);
        router = MoeRouter.create(rc, Backend.CPU);
        break;
      case "java":
        if (threads != 1) throw new IllegalStateException("the Java backend is single-threaded: threads=1 only");
        router = MoeRouter.create(rc, Backend.JAVA);
        break;
      case "floor":
        nLogits = new FloatPointer(logits);
        nIdx = new IntPointer(replayIdx);
        nOutIdx = new IntPointer((long) tokens * k);
        nOutWeights = new FloatPointer((long) tokens * k);
        if (threads > 1) pool = Executors.newFixedThreadPool(threads - 1);
        break;
      case "ort":
      case "ortSoftmaxTopk": {
        boolean grouped = rc.scoreFunction() == ScoreFunction.SIGMOID;
        if (impl.equals("ortSoftmaxTopk") && grouped)
          throw new IllegalStateException("ortSoftmaxTopk is the softmax configs' alternative graph");
        env = OrtEnvironment.getEnvironment();
        OrtSession.SessionOptions so = new OrtSession.SessionOptions();
        so.setIntraOpNumThreads(threads);
        so.setInterOpNumThreads(1);
        so.setExecutionMode(OrtSession.SessionOptions.ExecutionMode.SEQUENTIAL);
        so.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT);
        byte[] live = grouped ? OnnxGraphs.sigmoidBiasGrouped(rc.expertBias(), k, rc.groups(), rc.groupTopK(), rc.scale())
            : impl.equals("ort") ? OnnxGraphs.topkSoftmax(e, k) : OnnxGraphs.softmaxTopk(e, k);
        byte[] replay = grouped ? OnnxGraphs.gatherSigmoid(e, k, rc.scale()) : OnnxGraphs.gatherSoftmax(e, k);
        liveSession = env.createSession(live, so);
        replaySession = env.createSession(replay, so);
        FloatBuffer lb = ByteBuffer.allocateDirect(4 * logits.length).order(ByteOrder.nativeOrder()).asFloatBuffer();
        lb.put(logits).flip();
        logitsTensor = OnnxTensor.createTensor(env, lb, new long[] {tokens, e});
        LongBuffer ib = ByteBuffer.allocateDirect(8 * replayIdx.length).order(ByteOrder.nativeOrder()).asLongBuffer();
        for (int v : replayIdx) ib.put(v);
        ib.flip();
        idxTensor = OnnxTensor.createTensor(env, ib, new long[] {tokens, k});
        checkOrt();
        break;
      }
      default:
        throw new IllegalArgumentException("impl " + impl);
    }
  }

  /** The ONNX graphs must pick this library's experts (ties aside) and weights to float rounding. */
  private void checkOrt() throws OrtException {
    int k = rc.topK();
    try (OrtSession.Result r = liveSession.run(Map.of("logits", logitsTensor))) {
      long[][] idx = (long[][]) r.get("indices").get().getValue();
      float[][] w = (float[][]) r.get("weights").get().getValue();
      int mismatched = 0;
      for (int t = 0; t < tokens; t++)
        for (int j = 0; j < k; j++)
          if (idx[t][j] != replayIdx[t * k + j] || Math.abs(w[t][j] - reference(t, j)) > 1e-4f) mismatched++;
      if (mismatched > tokens * k / 100)
        throw new IllegalStateException("ONNX Runtime " + impl + " graph disagrees with the library on " + mismatched
            + " of " + tokens * k + " outputs (" + config + ")");
    }
  }

  private float[] referenceWeights;

  private float reference(int t, int j) {
    if (referenceWeights == null) {
      referenceWeights = new float[tokens * rc.topK()];
      try (MoeRouter ref = MoeRouter.create(rc, Backend.JAVA)) {
        ref.replay(logits, tokens, replayIdx, null, new int[tokens * rc.topK()], referenceWeights);
      }
    }
    return referenceWeights[t * rc.topK() + j];
  }

  @TearDown(Level.Trial)
  public void tearDown() throws OrtException {
    if (router != null) router.close();
    if (pool != null) pool.shutdownNow();
    for (AutoCloseable c : new AutoCloseable[] {nLogits, nIdx, nOutIdx, nOutWeights, logitsTensor, idxTensor, liveSession,
        replaySession}) {
      if (c == null) continue;
      try {
        c.close();
      } catch (Exception ex) {
        throw new IllegalStateException(ex);
      }
    }
  }

  @Benchmark
  public long live() throws Exception {
    switch (impl) {
      case "moe":
      case "java":
        return router.route(logits, tokens, outIdx, outWeights);
      case "floor":
        return split(false);
      default:
        try (OrtSession.Result r = liveSession.run(Map.of("logits", logitsTensor))) {
          return r.size();
        }
    }
  }

  @Benchmark
  public long replay() throws Exception {
    switch (impl) {
      case "moe":
      case "java":
        return router.replay(logits, tokens, replayIdx, null, outIdx, outWeights);
      case "floor":
        return split(true);
      case "ort":
        try (OrtSession.Result r = replaySession.run(Map.of("logits", logitsTensor, "idx", idxTensor))) {
          return r.size();
        }
      default:
        throw new IllegalStateException("no replay for " + impl);
    }
  }

  /** The floor loop over rows [0, T), split into {@code threads} even parts (the caller runs the last). */
  private long split(boolean gather) throws Exception {
    int e = rc.experts(), k = rc.topK();
    long per = (tokens + threads - 1) / threads;
    List<Future<Long>> parts = new ArrayList<>();
    for (int p = 0; p < threads - 1; p++) {
      long t0 = p * per, t1 = Math.min(tokens, t0 + per);
      parts.add(pool.submit(() -> floor(gather, t0, t1, e, k)));
    }
    long acc = floor(gather, (threads - 1) * per, tokens, e, k);
    for (Future<Long> f : parts) acc |= f.get();
    return acc;
  }

  private long floor(boolean gather, long t0, long t1, int e, int k) {
    if (t1 <= t0) return 0;
    long lg = nLogits.address() + 4 * t0 * e;
    long oi = nOutIdx.address() + 4 * t0 * k, ow = nOutWeights.address() + 4 * t0 * k;
    return gather ? NativeLibrary.floorGather(lg, t1 - t0, e, nIdx.address() + 4 * t0 * k, k, oi, ow)
        : NativeLibrary.floorStream(lg, 4 * (t1 - t0) * e, oi, ow, (t1 - t0) * k);
  }
}
