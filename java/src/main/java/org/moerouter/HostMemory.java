// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.lang.ref.WeakReference;
import java.nio.Buffer;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.ShortBuffer;

/**
 * Checks on direct buffers, and copies between raw host addresses and Java arrays for the Java
 * backend's address overloads. No {@code sun.misc.Unsafe}: buffer addresses come from JNI
 * (GetDirectBufferAddress, through JavaCPP), and raw-address copies are a memcpy in the JNI library.
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

  /**
   * The address of direct buffers passed in one argument position, remembering the last buffer's
   * base: GetDirectBufferAddress is a JNI upcall (tens of ns, more on a loaded machine) and callers
   * usually pass the same buffers every call. The base of a direct buffer never changes. The entry is
   * immutable and weakly held, so a racing update costs only another lookup and keeps nothing alive.
   */
  static final class AddressCache {
    private static final class Entry {
      final WeakReference<Buffer> buffer;
      final long base;

      Entry(Buffer buffer, long base) {
        this.buffer = new WeakReference<>(buffer);
        this.base = base;
      }
    }

    private Entry last;

    /** Address of b's position (0 for null); b is a checked direct buffer. Keep b reachable across its use. */
    long address(Buffer b) {
      if (b == null) return 0L;
      int size = elementBytes(b);
      Entry e = last;
      if (e == null || e.buffer.get() != b) last = e = new Entry(b, base(b));
      return e.base + (long) b.position() * size;
    }

    private static long base(Buffer b) {
      Buffer at0 = b.duplicate().position(0);  // JavaCPP adds the position: ask at 0
      if (at0 instanceof ByteBuffer) return RouterNative.moe_jni_address((ByteBuffer) at0);
      if (at0 instanceof ShortBuffer) return RouterNative.moe_jni_address((ShortBuffer) at0);
      if (at0 instanceof IntBuffer) return RouterNative.moe_jni_address((IntBuffer) at0);
      return RouterNative.moe_jni_address((FloatBuffer) at0);
    }

    private static int elementBytes(Buffer b) {
      return b instanceof ByteBuffer ? 1 : b instanceof ShortBuffer ? 2 : 4;
    }
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

  static void copy(byte[] src, int n, long address) {
    requireNative();
    RouterNative.moe_jni_copy(address, src, n);
  }
}
