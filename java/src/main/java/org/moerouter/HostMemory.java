// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.lang.reflect.Field;
import java.nio.Buffer;
import sun.misc.Unsafe;

/** Raw host memory access (direct-buffer addresses, copies between addresses and arrays). */
final class HostMemory {
  private HostMemory() {}

  private static final Unsafe UNSAFE;
  private static final long BUFFER_ADDRESS;

  static {
    try {
      Field f = Unsafe.class.getDeclaredField("theUnsafe");
      f.setAccessible(true);
      UNSAFE = (Unsafe) f.get(null);
      BUFFER_ADDRESS = UNSAFE.objectFieldOffset(Buffer.class.getDeclaredField("address"));
    } catch (ReflectiveOperationException e) {
      throw new ExceptionInInitializerError(e);
    }
  }

  /** Address of a direct buffer's current position (elementBytes per element). */
  static long address(Buffer b, int elementBytes, String name) {
    if (b == null) return 0L;
    if (!b.isDirect())
      throw new MoeRouterException(Status.INVALID_ARGUMENT,
          name + " must be a direct buffer (use the array overloads for heap memory)");
    return UNSAFE.getLong(b, BUFFER_ADDRESS) + (long) b.position() * elementBytes;
  }

  static void copy(long address, float[] dst, int n) {
    UNSAFE.copyMemory(null, address, dst, Unsafe.ARRAY_FLOAT_BASE_OFFSET, 4L * n);
  }

  static void copy(long address, short[] dst, int n) {
    UNSAFE.copyMemory(null, address, dst, Unsafe.ARRAY_SHORT_BASE_OFFSET, 2L * n);
  }

  static void copy(long address, int[] dst, int n) {
    UNSAFE.copyMemory(null, address, dst, Unsafe.ARRAY_INT_BASE_OFFSET, 4L * n);
  }

  static void copy(long address, byte[] dst, int n) {
    UNSAFE.copyMemory(null, address, dst, Unsafe.ARRAY_BYTE_BASE_OFFSET, n);
  }

  static void copy(float[] src, int n, long address) {
    UNSAFE.copyMemory(src, Unsafe.ARRAY_FLOAT_BASE_OFFSET, null, address, 4L * n);
  }

  static void copy(int[] src, int n, long address) {
    UNSAFE.copyMemory(src, Unsafe.ARRAY_INT_BASE_OFFSET, null, address, 4L * n);
  }
}
