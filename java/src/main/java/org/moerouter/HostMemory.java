// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.nio.Buffer;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.ShortBuffer;

/**
 * Checks on direct buffers, and copies between raw host addresses and Java arrays for the Java
 * backend's address overloads. No {@code sun.misc.Unsafe}: the native backends get buffer addresses
 * from JavaCPP (GetDirectBufferAddress), and raw-address copies are a memcpy in the JNI library.
 */
final class HostMemory {
  private HostMemory() {}

  /**
   * A direct buffer in the platform's byte order that the native code may read (or, for an output,
   * write) from its position on. {@code ByteBuffer.allocateDirect} is big-endian until told otherwise,
   * and native code reads memory in the platform order, so a mismatch would route silently wrong
   * values; a ByteBuffer's order matters only when it holds multi-byte elements.
   */
  static void checkDirect(Buffer b, String name, boolean output, boolean multiByte) {
    if (b == null) return;
    if (!b.isDirect())
      throw MoeRouter.invalid(name + " must be a direct buffer (use the array overloads for heap memory)");
    if (output && b.isReadOnly()) throw MoeRouter.invalid(name + " is a read-only buffer");
    ByteOrder order = b instanceof FloatBuffer ? ((FloatBuffer) b).order()
        : b instanceof IntBuffer ? ((IntBuffer) b).order()
        : b instanceof ShortBuffer ? ((ShortBuffer) b).order()
        : b instanceof ByteBuffer && multiByte ? ((ByteBuffer) b).order()
        : ByteOrder.nativeOrder();
    if (order != ByteOrder.nativeOrder())
      throw MoeRouter.invalid(name + " has byte order " + order + ", the native order here is " + ByteOrder.nativeOrder()
          + ": allocate with ByteBuffer.allocateDirect(n).order(ByteOrder.nativeOrder()) before asFloatBuffer()/asIntBuffer()");
  }

  private static void requireNative() {
    if (!RouterNative.available())
      throw new MoeRouterException(Status.UNSUPPORTED, "raw host addresses need the native library, which failed"
          + " to load (" + RouterNative.loadFailure() + "); use the array or direct-buffer overloads");
  }

  static void copy(long address, float[] dst, int n) {
    requireNative();
    RouterNative.moe_jni_copy(dst, address, 4L * n);
  }

  static void copy(long address, short[] dst, int n) {
    requireNative();
    RouterNative.moe_jni_copy(dst, address, 2L * n);
  }

  static void copy(long address, int[] dst, int n) {
    requireNative();
    RouterNative.moe_jni_copy(dst, address, 4L * n);
  }

  static void copy(long address, byte[] dst, int n) {
    requireNative();
    RouterNative.moe_jni_copy(dst, address, n);
  }

  static void copy(float[] src, int n, long address) {
    requireNative();
    RouterNative.moe_jni_copy(address, src, 4L * n);
  }

  static void copy(int[] src, int n, long address) {
    requireNative();
    RouterNative.moe_jni_copy(address, src, 4L * n);
  }
}
