// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.nio.Buffer;

/**
 * Checks on direct buffers, and copies between raw host addresses and Java arrays for the Java
 * backend's address overloads. No {@code sun.misc.Unsafe}: the native backends get buffer addresses
 * from JavaCPP (GetDirectBufferAddress), and raw-address copies are a memcpy in the JNI library.
 */
final class HostMemory {
  private HostMemory() {}

  /** A direct buffer the native code may read (or, for an output, write) from its position on. */
  static void checkDirect(Buffer b, String name, boolean output) {
    if (b == null) return;
    if (!b.isDirect())
      throw MoeRouter.invalid(name + " must be a direct buffer (use the array overloads for heap memory)");
    if (output && b.isReadOnly()) throw MoeRouter.invalid(name + " is a read-only buffer");
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
