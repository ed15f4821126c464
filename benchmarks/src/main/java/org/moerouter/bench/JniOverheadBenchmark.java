// SPDX-License-Identifier: Apache-2.0
package org.moerouter.bench;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
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
 * Fixed cost of crossing into the native library, in ns per call:
 * <ul>
 *   <li>{@code emptyCall}: {@link NativeLibrary#emptyCall()}, a JNI call that does nothing (target: at most 1 us);
 *   <li>{@code cpuRouteT0} / {@code javaRouteT0}: a route call with zero tokens (argument checks, array pinning,
 *       dispatch; no routing work);
 *   <li>{@code cpuRouteT1} / {@code javaRouteT1}: one token, native CPU vs pure Java.
 *   <li>{@code cpuBufferRouteT0} / {@code cpuBufferRouteT1}: the same native calls over direct buffers (raw
 *       addresses, no {@code GetPrimitiveArrayCritical} pinning), to separate the JNI transition from the
 *       per-array pinning cost of the {@code float[]} overload.
 * </ul>
 */
public class JniOverheadBenchmark extends ShortRun {
  @Param({"e64k6"})
  public String config;

  private MoeRouter cpu;
  private MoeRouter java;
  private float[] logits;
  private int[] outIdx;
  private float[] outWeights;
  private FloatBuffer logitsBuf;
  private IntBuffer outIdxBuf;
  private FloatBuffer outWeightsBuf;

  @Setup(Level.Trial)
  public void setup() {
    if (!NativeLibrary.loaded()) throw new IllegalStateException("native library not loaded: " + NativeLibrary.loadFailure());
    RouterConfig rc = BenchInputs.config(config);
    cpu = MoeRouter.create(rc, Backend.CPU);
    java = MoeRouter.create(rc, Backend.JAVA);
    logits = BenchInputs.logitsF32(rc.experts(), 42);
    outIdx = new int[rc.topK()];
    outWeights = new float[rc.topK()];
    logitsBuf = direct(4 * rc.experts()).asFloatBuffer().put(logits);
    logitsBuf.flip();
    outIdxBuf = direct(4 * rc.topK()).asIntBuffer();
    outWeightsBuf = direct(4 * rc.topK()).asFloatBuffer();
  }

  private static ByteBuffer direct(int bytes) {
    return ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder());
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    cpu.close();
    java.close();
  }

  @Benchmark
  public int emptyCall() {
    return NativeLibrary.emptyCall();
  }

  @Benchmark
  public long cpuRouteT0() {
    return cpu.route(logits, 0, outIdx, outWeights);
  }

  @Benchmark
  public long javaRouteT0() {
    return java.route(logits, 0, outIdx, outWeights);
  }

  @Benchmark
  public long cpuRouteT1() {
    return cpu.route(logits, 1, outIdx, outWeights);
  }

  @Benchmark
  public long javaRouteT1() {
    return java.route(logits, 1, outIdx, outWeights);
  }

  @Benchmark
  public long cpuBufferRouteT0() {
    return cpu.route(logitsBuf, LogitsType.FP32, 0, null, null, outIdxBuf, outWeightsBuf);
  }

  @Benchmark
  public long cpuBufferRouteT1() {
    return cpu.route(logitsBuf, LogitsType.FP32, 1, null, null, outIdxBuf, outWeightsBuf);
  }
}
