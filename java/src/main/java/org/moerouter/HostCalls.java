// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * How {@link NativeRouter}'s raw-address host calls ({@code routeAddress}, {@code backwardAddress},
 * direct buffers) cross into the native library. This version, used on JDK 17-21, calls through JNI
 * ({@link RouterNative}). On JDK 22+ the multi-release jar replaces it (src/main/java22) with one that
 * can use FFM downcalls over the C ABI instead; docs/benchmarks.md has the measurements behind the choice.
 * Both return what the moe_jni.h shims return: the value, or minus the status. {@code cpu} says whether
 * the router is a CPU one (the JDK 22+ version lets short CPU calls skip the thread-state transition).
 */
final class HostCalls {
  private HostCalls() {}

  /** moe_route_host: rows with non-finite logits, or -status. {@code outFlags} may be 0. */
  static long route(long handle, boolean cpu, long logits, int dtype, long tokens, long replayIdx, long replayMask,
      long outIdx, long outWeights, long outFlags) {
    return RouterNative.moe_jni_route_host(handle, logits, dtype, tokens, replayIdx, replayMask, outIdx, outWeights,
        outFlags);
  }

  /** moe_route_backward_host: 0, or the status. {@code flags} may be 0. */
  static int backward(long handle, boolean cpu, long logits, int dtype, long tokens, long idx, long gradWeights,
      long flags, long gradLogits) {
    return RouterNative.moe_jni_backward_host(handle, logits, dtype, tokens, idx, gradWeights, flags, gradLogits);
  }

  /** "JNI" here; on JDK 22+ "FFM", "JNI" or "JNI (FFM unavailable: why)" (see {@link NativeLibrary#hostCallBinding()}). */
  static String binding() {
    return "ffm".equalsIgnoreCase(System.getProperty("moerouter.hostCalls", "").trim())
        ? "JNI (FFM unavailable: FFM needs JDK 22+)" : "JNI";
  }
}
