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

  /** An empty call into the native library: what one JNI transition costs. */
  public static int emptyCall() {
    return RouterNative.moe_jni_noop();
  }
}
