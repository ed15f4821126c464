// SPDX-License-Identifier: Apache-2.0
package org.moerouter.bench;

import java.util.Arrays;
import org.moerouter.Backend;
import org.moerouter.LogitsType;
import org.moerouter.MoeRouter;
import org.moerouter.NativeLibrary;
import org.moerouter.RouterConfig;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Live routing, replay and backward over host arrays, per backend / config / batch size / dtype.
 *
 * <p>The score is ns per call ({@code ns/op}); the number of tokens varies with the {@code tokens}
 * parameter, so {@code @OperationsPerInvocation} cannot express it: {@link BenchMain} (and
 * {@code scripts/bench-profile.sh}) divide by {@code tokens} to report ns/token.
 *
 * <p>Replay is given the indices that live routing produced for the same logits (recorded in
 * {@link #setup()}), so both calls do the same weight computation on the same experts and the
 * difference is exactly "selection" vs "validation + copy of the replayed indices". Setup checks that
 * replay reproduces the live indices and weights bit for bit.
 *
 * <p>Inputs are built in {@link #setup()}; outputs are preallocated and reused, so the measured path
 * allocates nothing on the benchmark side (the native backends allocate nothing per call either; the
 * Java backend's own allocations, if any, are part of what is measured).
 *
 * <p><b>CUDA</b>: the backend param list includes CUDA, but a host without a visible GPU cannot run
 * it. {@link BenchMain} drops CUDA from the grid when {@link NativeLibrary#cudaDeviceCount()} is 0
 * (and says so); when this class is run directly via {@code java -jar benchmarks.jar}, pass
 * {@code -p backend=JAVA,CPU} on such hosts, otherwise the CUDA trials fail in setup with a clear
 * message and JMH moves on to the next trial.
 *
 * <p>CUDA limitation: the host-array API ({@code route(float[]...)}) stages through router-owned device
 * buffers and synchronises on every call, so each invocation measured here is
 * H2D copy + kernel + D2H copy + sync. The asynchronous device-pointer path ({@code routeDevice}, many
 * launches then one synchronisation) would need device allocations, which the Java API does not expose;
 * its timing with CUDA events is the job of the separate native benchmark program (native/bench).
 */
public class RoutingBenchmark extends ShortRun {
  @Param({"JAVA", "CPU", "CUDA"})
  public String backend;

  @Param({"e64k6", "e128k8", "e256k8g", "e512k10"})
  public String config;

  @Param({"1", "64", "4096", "65536"})
  public int tokens;

  @Param({"fp32", "bf16"})
  public String dtype;

  private MoeRouter router;
  private LogitsType type;
  private float[] logitsF32; // set for fp32
  private short[] logitsHalf; // set for bf16
  private int[] recordedIdx; // live indices of the same logits: the replay input
  private int[] outIdx;
  private float[] outWeights;
  private float[] gradWeights;
  private float[] gradLogits;

  @Setup(Level.Trial)
  public void setup() {
    Backend b = Backend.valueOf(backend);
    String why = MoeRouter.unavailableReason(b);
    if (why != null) {
      throw new IllegalStateException("backend " + b + " is not available on this host (" + why + "; CUDA devices: "
          + NativeLibrary.cudaDeviceCount() + "); exclude it with -p backend=JAVA,CPU or use BenchMain");
    }
    RouterConfig rc = BenchInputs.config(config);
    type = BenchInputs.dtype(dtype);
    int e = rc.experts(), k = rc.topK();
    int n = Math.multiplyExact(tokens, e);
    long seed = 0x5EED_0000L + 31L * e + tokens;
    if (type == LogitsType.FP32) logitsF32 = BenchInputs.logitsF32(n, seed);
    else logitsHalf = BenchInputs.logitsBf16(n, seed);
    router = MoeRouter.create(rc, b);

    recordedIdx = new int[tokens * k];
    float[] liveWeights = new float[tokens * k];
    live(recordedIdx, liveWeights);
    outIdx = new int[tokens * k];
    outWeights = new float[tokens * k];
    replay();
    if (!Arrays.equals(recordedIdx, outIdx) || !Arrays.equals(liveWeights, outWeights))
      throw new IllegalStateException("replay of the recorded live indices does not reproduce live routing ("
          + backend + ", " + config + ", " + dtype + ", T=" + tokens + ")");

    gradWeights = BenchInputs.gradients(tokens * k, seed + 1);
    gradLogits = new float[n];
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    if (router != null) router.close();
    router = null;
  }

  private long live(int[] idx, float[] w) {
    return logitsF32 != null ? router.route(logitsF32, tokens, idx, w)
        : router.route(logitsHalf, type, tokens, idx, w);
  }

  /** Live routing: score, select top-k (groups, bias), weights. */
  @Benchmark
  public long live() {
    return live(outIdx, outWeights);
  }

  /** Replay of the recorded live indices: validate, copy indices, weights (no selection). */
  @Benchmark
  public long replay() {
    return logitsF32 != null ? router.replay(logitsF32, tokens, recordedIdx, null, outIdx, outWeights)
        : router.replay(logitsHalf, type, tokens, recordedIdx, null, outIdx, outWeights);
  }

  /** Backward of the weights through the recorded experts: gradLogits [T, E] fully written. */
  @Benchmark
  public float[] backward() {
    if (logitsF32 != null) router.backward(logitsF32, tokens, recordedIdx, gradWeights, gradLogits);
    else router.backward(logitsHalf, type, tokens, recordedIdx, gradWeights, gradLogits);
    return gradLogits;
  }
}
