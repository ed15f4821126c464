// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/** Facts about the bundled native library, for diagnostics and benchmarks. */
public final class NativeLibrary {
  private NativeLibrary() {}

  /**
   * Whether the JNI library loaded on this platform (once, when the binding class initialised; a failure is
   * recorded, never thrown from static initialisation).
   *
   * @return true when the CPU backend, and the CUDA one if compiled in, can be created
   */
  public static boolean loaded() {
    return RouterNative.available();
  }

  /**
   * Why the JNI library did not load: for example no native jar ({@code linux-x86_64} or
   * {@code linux-x86_64-cuda} classifier) on the class path, another platform, or a missing system library.
   *
   * @return the loader's error as text, or null when the library loaded
   */
  public static String loadFailure() {
    Throwable t = RouterNative.loadFailure();
    return t == null ? null : String.valueOf(t);
  }

  /**
   * Whether the loaded library carries CUDA kernels (the {@code linux-x86_64-cuda} jar, built with nvcc).
   *
   * @return true when it does; false when it does not or did not load
   */
  public static boolean cudaCompiled() {
    return loaded() && RouterNative.moe_cuda_compiled() != 0;
  }

  /**
   * Visible CUDA devices, as the CUDA runtime counts them ({@code CUDA_VISIBLE_DEVICES} applies).
   *
   * @return the count; 0 without CUDA kernels, without a GPU, or when the library did not load
   */
  public static int cudaDeviceCount() {
    return loaded() ? RouterNative.moe_cuda_device_count() : 0;
  }

  /**
   * How raw-address host calls ({@code routeAddress}, {@code backwardAddress}, direct buffers and, on JDK
   * 22+, {@code MoeSegments}) reach the native library. JNI is the default; {@code -Dmoerouter.hostCalls=ffm}
   * asks for a java.lang.foreign downcall on JDK 22+ (docs/benchmarks.md measured no difference). Array
   * calls always use JNI.
   *
   * @return "JNI", "FFM", or "JNI (FFM unavailable: why)" when FFM was asked for and could not be bound
   */
  public static String hostCallBinding() {
    return HostCalls.binding();
  }

  /**
   * Benchmark floor of live routing (JniOverheadBenchmark): reads {@code bytes} bytes at {@code in} and
   * writes {@code outs} indices and weights in a plain native loop, with no checks. Not a routing call.
   * Requires {@link #loaded()}; the addresses are the caller's responsibility.
   *
   * @param in address of the input, read as 64-bit words
   * @param bytes bytes to read ({@code bytes / 8} words)
   * @param outIdx address receiving {@code outs} int32 values
   * @param outWeights address receiving {@code outs} fp32 values
   * @param outs elements to write to each output
   * @return the OR of the words read (so the reads cannot be optimised away)
   */
  public static long floorStream(long in, long bytes, long outIdx, long outWeights, long outs) {
    return RouterNative.moe_jni_floor_stream(in, bytes, outIdx, outWeights, outs);
  }

  /**
   * Benchmark floor of replay: for each of {@code tokens} rows reads the {@code k} fp32 logits named by its
   * row of {@code idx} and writes them with their indices, in a plain native loop with no checks. Not a
   * routing call. Requires {@link #loaded()}; the addresses are the caller's responsibility.
   *
   * @param logits address of fp32 logits [tokens, experts]
   * @param tokens rows
   * @param experts E, the row length of logits
   * @param idx address of int32 indices [tokens, k], each in {@code [0, experts)}
   * @param k indices per row
   * @param outIdx address receiving the indices [tokens, k]
   * @param outWeights address receiving the logits read [tokens, k]
   * @return the OR of the bit patterns of the logits read
   */
  public static long floorGather(long logits, long tokens, int experts, long idx, int k, long outIdx, long outWeights) {
    return RouterNative.moe_jni_floor_gather(logits, tokens, experts, idx, k, outIdx, outWeights);
  }

  /**
   * An empty call into the native library: what one JNI transition costs (JniOverheadBenchmark). Requires
   * {@link #loaded()}.
   *
   * @return 0
   */
  public static int emptyCall() {
    return RouterNative.moe_jni_noop();
  }
}
