// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Deque;

/**
 * Device buffers and streams for the tests of the device-pointer calls (RouterNative's
 * moe_jni_cuda_* helpers, device 0). Everything allocated is released by {@link #close()}.
 */
final class CudaMemory implements AutoCloseable {
  private final Deque<Long> buffers = new ArrayDeque<>();
  private final Deque<Long> streams = new ArrayDeque<>();

  /** Pointer or handle, or -status. */
  private static long handle(long value, String what) {
    if (value < 0) throw RouterNative.error((int) -value, what);
    return value;
  }

  private static void ok(int status, String what) {
    if (status != 0) throw RouterNative.error(status, what);
  }

  long alloc(long bytes) {
    long p = handle(RouterNative.moe_jni_cuda_malloc(0, Math.max(bytes, 16)), "cudaMalloc");
    buffers.push(p);
    return p;
  }

  /** A buffer of {@code bytes} filled with 0xff (NaN floats, -1 ints), to see what a call wrote. */
  long poisoned(long bytes) {
    long p = alloc(bytes);
    byte[] ff = new byte[(int) Math.max(bytes, 16)];
    Arrays.fill(ff, (byte) -1);
    ok(RouterNative.moe_jni_cuda_upload(p, ff, ff.length), "upload");
    return p;
  }

  long upload(double[] a) {
    long p = alloc(8L * a.length);
    ok(RouterNative.moe_jni_cuda_upload(p, a, 8L * a.length), "upload");
    return p;
  }

  double[] doubles(long p, int n) {
    double[] a = new double[n];
    ok(RouterNative.moe_jni_cuda_download(a, p, 8L * n), "download");
    return a;
  }

  long upload(float[] a) {
    long p = alloc(4L * a.length);
    ok(RouterNative.moe_jni_cuda_upload(p, a, 4L * a.length), "upload");
    return p;
  }

  long upload(int[] a) {
    long p = alloc(4L * a.length);
    ok(RouterNative.moe_jni_cuda_upload(p, a, 4L * a.length), "upload");
    return p;
  }

  long upload(short[] a) {
    long p = alloc(2L * a.length);
    ok(RouterNative.moe_jni_cuda_upload(p, a, 2L * a.length), "upload");
    return p;
  }

  long upload(byte[] a) {
    long p = alloc(a.length);
    ok(RouterNative.moe_jni_cuda_upload(p, a, a.length), "upload");
    return p;
  }

  float[] floats(long p, int n) {
    float[] a = new float[n];
    ok(RouterNative.moe_jni_cuda_download(a, p, 4L * n), "download");
    return a;
  }

  int[] ints(long p, int n) {
    int[] a = new int[n];
    ok(RouterNative.moe_jni_cuda_download(a, p, 4L * n), "download");
    return a;
  }

  byte[] bytes(long p, int n) {
    byte[] a = new byte[n];
    ok(RouterNative.moe_jni_cuda_download(a, p, n), "download");
    return a;
  }

  long oneLong(long p) {
    long[] a = new long[1];
    ok(RouterNative.moe_jni_cuda_download(a, p, 8), "download");
    return a[0];
  }

  long stream() {
    long s = handle(RouterNative.moe_jni_cuda_stream_create(0), "cudaStreamCreate");
    streams.push(s);
    return s;
  }

  static void sync(long stream) {
    ok(RouterNative.moe_jni_cuda_stream_synchronize(stream), "cudaStreamSynchronize");
  }

  @Override
  public void close() {
    while (!streams.isEmpty()) RouterNative.moe_jni_cuda_stream_destroy(streams.pop());
    while (!buffers.isEmpty()) RouterNative.moe_jni_cuda_free(buffers.pop());
  }
}
