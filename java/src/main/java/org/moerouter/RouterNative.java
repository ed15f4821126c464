// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.nio.ByteBuffer;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.ShortBuffer;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.CriticalRegion;
import org.bytedeco.javacpp.annotation.NoException;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.Properties;

/**
 * JavaCPP binding over the C ABI (native/include/moe_router.h) and its scalar shim
 * (java/src/main/cpp/moe_jni.h). Package-private: {@link MoeRouter} is the API.
 *
 * <p>Hot entry points are {@code @NoException} (no C++ exception wrapper) and take Java arrays
 * through {@code @CriticalRegion} (pinned, not copied); the caller checks array lengths first.
 */
@Properties({
    @Platform(
        include = {"moe_router.h", "moe_jni.h"},
        // JavaCPP emits -l flags in reverse order: dependencies first.
        link = {"pthread", "rt", "dl", "moe_router_all"},
        library = "jnimoerouter"),
    // The native artifacts (README "Adoption"): org/moerouter/linux-x86_64 (classifier linux-x86_64) holds the
    // CPU-only library, org/moerouter/linux-x86_64-cuda (classifier linux-x86_64-cuda) the one with the CUDA
    // kernels. JavaCPP tries an extension's folder first, so with both jars present the CUDA library loads.
    @Platform(value = "linux-x86_64", extension = "-cuda")})
final class RouterNative {
  private RouterNative() {}

  private static final Throwable LOAD_FAILURE;

  static {
    Throwable failure = null;
    try {
      Loader.load();
      // The native default counts the affinity mask; the JVM's count also honours
      // -XX:ActiveProcessorCount and container CPU quotas. No thread starts here.
      moe_set_num_threads(defaultCpuThreads());
    } catch (Throwable t) {
      failure = withArtifactHint(t);
    }
    LOAD_FAILURE = failure;
  }

  /**
   * JavaCPP's "no jnimoerouter in java.library.path" when no native jar is there at all says which artifact
   * is missing; a library that is there but fails to load keeps its own error.
   */
  private static Throwable withArtifactHint(Throwable t) {
    if (!(t instanceof UnsatisfiedLinkError)) return t;
    String platform = Loader.getPlatform();
    for (String folder : new String[] {platform, platform + "-cuda"}) {
      if (RouterNative.class.getResource(folder + "/" + System.mapLibraryName("jnimoerouter")) != null) return t;
    }
    UnsatisfiedLinkError e = new UnsatisfiedLinkError("no moe-router native library for " + platform + " on the class"
        + " path: add the jar of org.moerouter:moe-router with classifier linux-x86_64 (CPU) or linux-x86_64-cuda (CPU"
        + " and CUDA), the same version (on the module path also --add-modules org.moerouter.linux.x86_64[.cuda]);"
        + " only linux-x86_64 is built (" + t.getMessage() + ")");
    e.initCause(t);
    return e;
  }

  /** {@code -Dmoerouter.threads=N} (N >= 1), else the JVM's available processors. */
  static int defaultCpuThreads() {
    String p = System.getProperty("moerouter.threads");
    if (p != null) {
      try {
        int n = Integer.parseInt(p.trim());
        if (n >= 1) return n;
      } catch (NumberFormatException ignored) {
        // reported below
      }
      System.getLogger("org.moerouter").log(System.Logger.Level.WARNING,
          "ignoring -Dmoerouter.threads=" + p + " (expected an integer >= 1)");
    }
    return Runtime.getRuntime().availableProcessors();
  }

  /** Null when the native library loaded, else why it did not. */
  static Throwable loadFailure() {
    return LOAD_FAILURE;
  }

  static boolean available() {
    return LOAD_FAILURE == null;
  }

  @NoException static native @Cast("const char*") BytePointer moe_status_string(int status);
  @NoException static native @Cast("const char*") BytePointer moe_last_error_message();
  @NoException static native int moe_cuda_device_count();
  @NoException static native int moe_cuda_compiled();

  @NoException static native long moe_jni_router_create(int backend, int device, int experts, int topK,
      int scoreFn, int preSoftmax, int groups, int groupTopK, float scale, @Cast("const float*") float[] bias,
      int normalize, int groupScore, int nonFinite, int minusOneRows);
  @NoException static native int moe_jni_config_validate(int experts, int topK, int scoreFn, int preSoftmax,
      int groups, int groupTopK, float scale, @Cast("const float*") float[] bias, int normalize, int groupScore,
      int nonFinite, int minusOneRows);
  @NoException static native int moe_jni_router_destroy(long handle);
  @NoException static native int moe_jni_router_set_bias(long handle, @Cast("const float*") float[] bias);
  @NoException static native int moe_jni_router_set_threads(long handle, int threads);
  @NoException static native int moe_set_num_threads(int threads);
  @NoException static native int moe_get_num_threads();

  // ---- routing, host memory: arrays (pinned) ----
  @NoException @CriticalRegion static native long moe_jni_route_host(long handle,
      @Cast("const void*") float[] logits, int dtype, long tokens,
      @Cast("const int32_t*") int[] replayIdx, @Cast("const uint8_t*") byte[] replayMask,
      @Cast("int32_t*") int[] outIdx, float[] outWeights, @Cast("uint8_t*") byte[] outFlags);

  @NoException @CriticalRegion static native long moe_jni_route_host(long handle,
      @Cast("const void*") short[] logits, int dtype, long tokens,
      @Cast("const int32_t*") int[] replayIdx, @Cast("const uint8_t*") byte[] replayMask,
      @Cast("int32_t*") int[] outIdx, float[] outWeights, @Cast("uint8_t*") byte[] outFlags);

  // ---- routing, host memory: raw addresses (direct buffers, MemorySegment.address()) ----
  @NoException static native long moe_jni_route_host(long handle,
      @Cast("const void*") long logits, int dtype, long tokens,
      @Cast("const int32_t*") long replayIdx, @Cast("const uint8_t*") long replayMask,
      @Cast("int32_t*") long outIdx, @Cast("float*") long outWeights, @Cast("uint8_t*") long outFlags);

  // ---- direct-buffer addresses: GetDirectBufferAddress, plus the position JavaCPP adds (in elements) ----
  @NoException static native long moe_jni_address(@Cast("const void*") ByteBuffer b);
  @NoException static native long moe_jni_address(@Cast("const void*") ShortBuffer b);
  @NoException static native long moe_jni_address(@Cast("const void*") IntBuffer b);
  @NoException static native long moe_jni_address(@Cast("const void*") FloatBuffer b);

  // ---- routing, device memory (CUDA router) ----
  @NoException static native int moe_jni_route_device(long handle,
      @Cast("const void*") long logits, int dtype, long tokens,
      @Cast("const int32_t*") long replayIdx, @Cast("const uint8_t*") long replayMask,
      @Cast("int32_t*") long outIdx, @Cast("float*") long outWeights, @Cast("uint8_t*") long outFlags,
      @Cast("int64_t*") long nonfiniteRows, @Cast("void*") long stream);

  // ---- backward ----
  @NoException @CriticalRegion static native int moe_jni_backward_host(long handle,
      @Cast("const void*") float[] logits, int dtype, long tokens, @Cast("const int32_t*") int[] idx,
      @Cast("const float*") float[] gradWeights, @Cast("const uint8_t*") byte[] flags, float[] gradLogits);

  @NoException @CriticalRegion static native int moe_jni_backward_host(long handle,
      @Cast("const void*") short[] logits, int dtype, long tokens, @Cast("const int32_t*") int[] idx,
      @Cast("const float*") float[] gradWeights, @Cast("const uint8_t*") byte[] flags, float[] gradLogits);

  @NoException static native int moe_jni_backward_host(long handle,
      @Cast("const void*") long logits, int dtype, long tokens, @Cast("const int32_t*") long idx,
      @Cast("const float*") long gradWeights, @Cast("const uint8_t*") long flags, @Cast("float*") long gradLogits);

  @NoException static native int moe_jni_backward_device(long handle,
      @Cast("const void*") long logits, int dtype, long tokens, @Cast("const int32_t*") long idx,
      @Cast("const float*") long gradWeights, @Cast("const uint8_t*") long flags, @Cast("float*") long gradLogits,
      @Cast("void*") long stream);

  @NoException static native long moe_jni_check_replay(long handle);

  @NoException @CriticalRegion static native int moe_tokens_per_expert(@Cast("const int32_t*") int[] idx,
      long tokens, int k, int experts, @Cast("int32_t*") int[] counts);

  // ---- training extras (host memory) ----
  @NoException @CriticalRegion static native int moe_dense_views(@Cast("const int32_t*") int[] idx,
      @Cast("const float*") float[] w, long tokens, int k, int experts, @Cast("uint8_t*") byte[] map,
      @Cast("uint64_t*") long[] mapBits, float[] probs);

  // ---- spec section 6 (host memory; any router). The arrays stay pinned for the whole call, which is bounded
  // by the call's T x E logits (tens of ms for the losses at T = 4096, E = 256: docs/benchmarks.md). ----
  @NoException @CriticalRegion static native long moe_jni_valid_tokens(long handle, @Cast("const void*") float[] logits,
      int dtype, long tokens, @Cast("const uint8_t*") byte[] padding, @Cast("uint8_t*") byte[] outValid);

  @NoException @CriticalRegion static native long moe_jni_valid_tokens(long handle, @Cast("const void*") short[] logits,
      int dtype, long tokens, @Cast("const uint8_t*") byte[] padding, @Cast("uint8_t*") byte[] outValid);

  @NoException @CriticalRegion static native int moe_tokens_per_expert_valid(@Cast("const int32_t*") int[] idx,
      @Cast("const uint8_t*") byte[] valid, long tokens, int k, int experts, @Cast("int32_t*") int[] counts);

  @NoException @CriticalRegion static native int moe_map_tokens_per_expert(@Cast("const uint8_t*") byte[] map,
      @Cast("const uint8_t*") byte[] valid, long tokens, int experts, @Cast("int32_t*") int[] counts);

  /** outValues [5]: aux, seq aux, global aux, z, N. */
  @NoException @CriticalRegion static native int moe_jni_losses(long handle, @Cast("const void*") float[] logits,
      int dtype, long tokens, @Cast("const uint8_t*") byte[] valid, float auxCoeff, float seqAuxCoeff,
      float globalAuxCoeff, float zCoeff, long seqLength, int seqLayout, @Cast("const double*") double[] globalTokens,
      double globalNumTokens, double[] outValues, @Cast("int32_t*") int[] outCounts, float[] outScores,
      @Cast("uint8_t*") byte[] outMap, float[] grad);

  @NoException @CriticalRegion static native int moe_jni_losses(long handle, @Cast("const void*") short[] logits,
      int dtype, long tokens, @Cast("const uint8_t*") byte[] valid, float auxCoeff, float seqAuxCoeff,
      float globalAuxCoeff, float zCoeff, long seqLength, int seqLayout, @Cast("const double*") double[] globalTokens,
      double globalNumTokens, double[] outValues, @Cast("int32_t*") int[] outCounts, float[] outScores,
      @Cast("uint8_t*") byte[] outMap, float[] grad);

  /** Returns the dropped entries, or -status. */
  @NoException @CriticalRegion static native long moe_jni_drop_tokens(long handle, @Cast("const int32_t*") int[] idx,
      @Cast("const float*") float[] w, long tokens, double capacityFactor, int policy, int padToCapacity,
      @Cast("uint8_t*") byte[] outMap, float[] outProbs, @Cast("uint8_t*") byte[] outKept,
      @Cast("int32_t*") int[] outKeptCounts);

  // ---- spec section 6, device memory (CUDA router; a CPU router reads these as host addresses) ----
  @NoException static native int moe_jni_valid_tokens_device(long handle, @Cast("const void*") long logits, int dtype,
      long tokens, @Cast("const uint8_t*") long padding, @Cast("uint8_t*") long outValid,
      @Cast("int64_t*") long outCount, @Cast("void*") long stream);

  /** map 0: counts of idx [tokens, k]; else the column sums of map [tokens, E]. */
  @NoException static native int moe_jni_tokens_per_expert_device(long handle, @Cast("const int32_t*") long idx,
      @Cast("const uint8_t*") long map, @Cast("const uint8_t*") long valid, long tokens, @Cast("int32_t*") long counts,
      @Cast("void*") long stream);

  /** Workspace bytes, or -status; kind 0 losses, 1 dropping. */
  @NoException static native long moe_jni_workspace_bytes(long handle, int kind, long tokens, float auxCoeff,
      float seqAuxCoeff, float globalAuxCoeff, float zCoeff, long seqLength, int seqLayout, int auxOutputs, int policy);

  @NoException static native int moe_jni_losses_device(long handle, @Cast("const void*") long logits, int dtype,
      long tokens, @Cast("const uint8_t*") long valid, float auxCoeff, float seqAuxCoeff, float globalAuxCoeff,
      float zCoeff, long seqLength, int seqLayout, @Cast("const double*") long globalTokens, double globalNumTokens,
      @Cast("void*") long outValues, @Cast("int32_t*") long outCounts, @Cast("float*") long outScores,
      @Cast("uint8_t*") long outMap, @Cast("float*") long grad, @Cast("void*") long workspace, long workspaceBytes,
      @Cast("void*") long stream);

  @NoException static native int moe_jni_drop_tokens_device(long handle, @Cast("const int32_t*") long idx,
      @Cast("const float*") long w, long tokens, double capacityFactor, int policy, int padToCapacity,
      @Cast("uint8_t*") long outMap, @Cast("float*") long outProbs, @Cast("uint8_t*") long outKept,
      @Cast("int32_t*") long outKeptCounts, @Cast("int64_t*") long outDropped, @Cast("void*") long workspace,
      long workspaceBytes, @Cast("void*") long stream);

  // ---- copies between raw host addresses and arrays (pinned for one memcpy) ----
  @NoException @CriticalRegion static native void moe_jni_copy(@Cast("void*") float[] dst,
      @Cast("const void*") long src, long bytes);
  @NoException @CriticalRegion static native void moe_jni_copy(@Cast("void*") short[] dst,
      @Cast("const void*") long src, long bytes);
  @NoException @CriticalRegion static native void moe_jni_copy(@Cast("void*") int[] dst,
      @Cast("const void*") long src, long bytes);
  @NoException @CriticalRegion static native void moe_jni_copy(@Cast("void*") byte[] dst,
      @Cast("const void*") long src, long bytes);
  @NoException @CriticalRegion static native void moe_jni_copy(@Cast("void*") long dst,
      @Cast("const void*") float[] src, long bytes);
  @NoException @CriticalRegion static native void moe_jni_copy(@Cast("void*") long dst,
      @Cast("const void*") byte[] src, long bytes);
  @NoException @CriticalRegion static native void moe_jni_copy(@Cast("void*") long dst,
      @Cast("const void*") int[] src, long bytes);

  @NoException static native int moe_jni_noop();

  // Benchmark floors over raw addresses (NativeLibrary.floor*).
  @NoException static native long moe_jni_floor_stream(@Cast("const void*") long in, long bytes,
      @Cast("int32_t*") long outIdx, @Cast("float*") long outWeights, long outs);
  @NoException static native long moe_jni_floor_gather(@Cast("const float*") long logits, long tokens, int experts,
      @Cast("const int32_t*") long idx, int k, @Cast("int32_t*") long outIdx, @Cast("float*") long outWeights);

  /**
   * Test hook (CpuIsaLevelsTest): caps the CPU kernels' instruction set for the process (0 scalar, 1 AVX2, 2 AVX-512,
   * -1 no cap); returns the level now in use.
   */
  @NoException static native int moe_jni_test_cpu_isa(int cap);

  /** Test hook (FpEnvTest): a host route/backward from a thread with FTZ (mode 1) and/or DAZ (mode 2) set. */
  @NoException @CriticalRegion static native long moe_jni_test_fpenv_call(long handle, int mode, int backward,
      @Cast("const void*") float[] logits, int dtype, long tokens, @Cast("const int32_t*") int[] replayIdx,
      @Cast("int32_t*") int[] outIdx, float[] outWeights, @Cast("uint8_t*") byte[] outFlags, float[] outGrad);

  /** Section 6 under FTZ/DAZ (FpEnvTest): op 0 losses (aux, z), op 1 probs dropping; 0 or -status. */
  @NoException @CriticalRegion static native long moe_jni_test_fpenv_training(long handle, int mode, int op,
      @Cast("const float*") float[] logits, long tokens, float aux, float z, double[] outValues,
      @Cast("int32_t*") int[] outCounts, float[] grad, @Cast("const int32_t*") int[] idx, @Cast("const float*") float[] w,
      double cf, @Cast("uint8_t*") byte[] map, float[] probs, @Cast("uint8_t*") byte[] kept);

  // Device memory and streams, for the tests of the device-pointer calls (CudaRouterTest).
  @NoException static native long moe_jni_cuda_malloc(int device, long bytes);
  @NoException static native int moe_jni_cuda_free(long ptr);
  @NoException @CriticalRegion static native int moe_jni_cuda_upload(long dst, @Cast("const void*") float[] src, long bytes);
  @NoException @CriticalRegion static native int moe_jni_cuda_upload(long dst, @Cast("const void*") int[] src, long bytes);
  @NoException @CriticalRegion static native int moe_jni_cuda_upload(long dst, @Cast("const void*") short[] src, long bytes);
  @NoException @CriticalRegion static native int moe_jni_cuda_upload(long dst, @Cast("const void*") byte[] src, long bytes);
  @NoException @CriticalRegion static native int moe_jni_cuda_download(@Cast("void*") float[] dst, long src, long bytes);
  @NoException @CriticalRegion static native int moe_jni_cuda_download(@Cast("void*") int[] dst, long src, long bytes);
  @NoException @CriticalRegion static native int moe_jni_cuda_download(@Cast("void*") long[] dst, long src, long bytes);
  @NoException @CriticalRegion static native int moe_jni_cuda_download(@Cast("void*") byte[] dst, long src, long bytes);
  @NoException @CriticalRegion static native int moe_jni_cuda_download(@Cast("void*") double[] dst, long src, long bytes);
  @NoException @CriticalRegion static native int moe_jni_cuda_upload(long dst, @Cast("const void*") double[] src, long bytes);
  @NoException static native long moe_jni_cuda_stream_create(int device);
  @NoException static native int moe_jni_cuda_stream_destroy(long stream);
  @NoException static native int moe_jni_cuda_stream_synchronize(long stream);

  @NoException @CriticalRegion static native int moe_jni_routing_agreement(@Cast("const int32_t*") int[] a,
      @Cast("const int32_t*") int[] b, long rows, int k, long rowStride, int experts,
      @Cast("int64_t*") long[] out2, @Cast("uint8_t*") byte[] rowDiffers);

  /** Builds the exception for a failed call from the calling thread's native error detail. */
  static MoeRouterException error(int status, String operation) {
    String detail = moe_last_error_message().getString();
    Status s = Status.fromCode(status);
    return new MoeRouterException(s, operation + " failed: " + s.description()
        + (detail.isEmpty() ? "" : ": " + detail));
  }
}
