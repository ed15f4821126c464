// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/** Facts about the bundled native library, for diagnostics and benchmarks. */
public final class NativeLibrary {
  private NativeLibrary() {}

  /** True when the JNI library loaded on this platform. */
  public static boolean loaded() {
    return RouterNative.available();
  }

  /** Why the JNI library did not load, or null when it did. */
  public static String loadFailure() {
    Throwable t = RouterNative.loadFailure();
    return t == null ? null : String.valueOf(t);
  }

  /** True when the library was compiled with CUDA kernels. */
  public static boolean cudaCompiled() {
    return loaded() && RouterNative.moe_cuda_compiled() != 0;
  }

  /** Visible CUDA devices (0 without CUDA or without a GPU). */
  public static int cudaDeviceCount() {
    return loaded() ? RouterNative.moe_cuda_device_count() : 0;
  }

  /**
   * How raw-address host calls ({@code routeAddress}, {@code backwardAddress}, direct buffers and, on
   * JDK 22+, {@code MoeSegments}) reach the native library: "JNI", or "FFM" (a java.lang.foreign
   * downcall, JDK 22+ only, opt-in with {@code -Dmoerouter.hostCalls=ffm}; JNI is the default, see docs/benchmarks.md).
   */
  public static String hostCallBinding() {
    return HostCalls.binding();
  }

  /**
   * Benchmark floor of live routing (raw host addresses, no checks): reads {@code bytes} bytes at {@code in}
   * and writes {@code outs} indices and weights, in a plain native loop. Not a routing call.
   */
  public static long floorStream(long in, long bytes, long outIdx, long outWeights, long outs) {
    return RouterNative.moe_jni_floor_stream(in, bytes, outIdx, outWeights, outs);
  }

  /**
   * Benchmark floor of replay (raw host addresses, no checks): for each of {@code tokens} rows reads the
   * {@code k} fp32 logits named by its row of {@code idx} and writes indices and weights. Not a routing call.
   */
  public static long floorGather(long logits, long tokens, int experts, long idx, int k, long outIdx, long outWeights) {
    return RouterNative.moe_jni_floor_gather(logits, tokens, experts, idx, k, outIdx, outWeights);
  }

  /** An empty call into the native library: what one JNI transition costs. */
  public static int emptyCall() {
    return RouterNative.moe_jni_noop();
  }
}
