// SPDX-License-Identifier: Apache-2.0
package org.moerouter.bench;

import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.ShortPointer;
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
 * JNI vs FFM for the raw-address host calls (decode-sized batches, T = 0..64), in ns per call: the path
 * of {@code MoeRouter.routeAddress}/{@code backwardAddress}, direct buffers and, on JDK 22+, {@code
 * MoeSegments}. Run it on JDK 22+ (the FFM binding is in the multi-release part of the jar); on JDK 17
 * the {@code ffm*} trials fail in setup with the reason.
 *
 * <p>{@code via}: {@code jni} (JavaCPP JNI, {@code RouterNative.moe_jni_route_host}); {@code ffm} (a
 * java.lang.foreign downcall bound to {@code moe_route_host} of the C ABI, normal thread-state transition);
 * {@code ffmCritical} (the same with {@code Linker.Option.critical}, no transition). Each trial is a fresh
 * JVM fork, so setup picks the binding with {@code -Dmoerouter.hostCalls} before the library first uses
 * it, then checks {@link NativeLibrary#hostCallBinding()}. Inputs live in native memory (JavaCPP
 * pointers) allocated in setup; outputs are reused; the benchmark allocates nothing per call.
 * {@code T = 0} measures the fixed cost alone (argument checks, transition, the C ABI's checks).
 */
public class HostCallBenchmark extends ShortRun {
  /** Named so that it sorts last: JMH varies the alphabetically last param fastest, so the three bindings
   *  of one shape run back to back and share whatever else the machine is doing. */
  @Param({"jni", "ffm", "ffmCritical"})
  public String via;

  @Param({"e64k6", "e256k8g"})
  public String config;

  @Param({"0", "1", "16", "64"})
  public int tokens;

  @Param({"bf16"})
  public String dtype;

  private MoeRouter router;
  private LogitsType type;
  private FloatPointer logitsF32;
  private ShortPointer logitsHalf;
  private IntPointer idx;
  private FloatPointer weights;
  private FloatPointer gradWeights;
  private FloatPointer gradLogits;
  private long logits, idxAddress, weightsAddress, gradWeightsAddress, gradLogitsAddress;

  @Setup(Level.Trial)
  public void setup() {
    switch (via) {
      case "jni":
        System.setProperty("moerouter.hostCalls", "jni");
        break;
      case "ffm":
        System.setProperty("moerouter.hostCalls", "ffm");
        System.setProperty("moerouter.hostCalls.criticalTokens", "0");
        break;
      case "ffmCritical":
        System.setProperty("moerouter.hostCalls", "ffm");
        System.setProperty("moerouter.hostCalls.criticalTokens", String.valueOf(Long.MAX_VALUE));
        break;
      default:
        throw new IllegalArgumentException("via " + via);
    }
    if (!NativeLibrary.loaded()) throw new IllegalStateException("native library not loaded: " + NativeLibrary.loadFailure());
    String expected = via.equals("jni") ? "JNI" : "FFM";
    if (!NativeLibrary.hostCallBinding().equals(expected))
      throw new IllegalStateException("binding " + via + " wanted, the library uses " + NativeLibrary.hostCallBinding()
          + " (java.version " + System.getProperty("java.version") + ")");
    RouterConfig rc = BenchInputs.config(config);
    router = MoeRouter.create(rc, Backend.CPU);
    type = BenchInputs.dtype(dtype);
    int n = Math.max(1, tokens);
    int e = rc.experts(), k = rc.topK();
    if (type == LogitsType.FP32) {
      logitsF32 = new FloatPointer(BenchInputs.logitsF32(n * e, 7));
      logits = logitsF32.address();
    } else {
      logitsHalf = new ShortPointer(BenchInputs.logitsBf16(n * e, 7));
      logits = logitsHalf.address();
    }
    idx = new IntPointer((long) n * k);
    weights = new FloatPointer((long) n * k);
    gradWeights = new FloatPointer(BenchInputs.logitsF32(n * k, 8));
    gradLogits = new FloatPointer((long) n * e);
    idxAddress = idx.address();
    weightsAddress = weights.address();
    gradWeightsAddress = gradWeights.address();
    gradLogitsAddress = gradLogits.address();
    router.routeAddress(logits, type, tokens, 0, 0, idxAddress, weightsAddress);  // the experts backward uses
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    router.close();
    for (Pointer p : new Pointer[] {logitsF32, logitsHalf, idx, weights, gradWeights, gradLogits})
      if (p != null) p.close();
  }

  @Benchmark
  public long route() {
    return router.routeAddress(logits, type, tokens, 0, 0, idxAddress, weightsAddress);
  }

  @Benchmark
  public void backward() {
    router.backwardAddress(logits, type, tokens, idxAddress, gradWeightsAddress, gradLogitsAddress);
  }
}
