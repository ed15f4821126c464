// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

/**
 * {@link Npy#read(ByteBuffer, String)} on hand-built .npy bytes: every header field at its limit and one past,
 * and malformed header dicts with the exact message (these closed the PIT survivors in {@code Npy}'s header
 * parsing).
 */
class NpyHeaderTest {
  private static final String C23 = "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }";

  private static ByteBuffer npy(int major, int minor, String header, int dataBytes) {
    byte[] h = header.getBytes(major == 3 ? StandardCharsets.UTF_8 : StandardCharsets.ISO_8859_1);
    int lenBytes = major == 1 ? 2 : 4;
    ByteBuffer b = ByteBuffer.allocate(8 + lenBytes + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
    b.put(new byte[] {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y', (byte) major, (byte) minor});
    if (major == 1) b.putShort((short) h.length);
    else b.putInt(h.length);
    b.put(h);
    for (int i = 0; i < dataBytes; i++) b.put((byte) i);
    return b.flip();
  }

  private static void rejects(ByteBuffer file, String message) {
    TraceFormatException e = assertThrows(TraceFormatException.class, () -> Npy.read(file, "x"), message);
    assertEquals("x: " + message, e.getMessage());
  }

  private static void rejectsHeader(String header, String message) {
    rejects(npy(1, 0, header, 0), message);
  }

  @Test
  void validHeadersOfEveryVersion() {
    for (int major = 1; major <= 3; major++) {
      Npy.Array a = Npy.read(npy(major, 0, C23, 24), "x");
      assertArrayEquals(new long[] {2, 3}, a.shape());
      assertEquals(Npy.Dtype.I4, a.dtype());
      assertArrayEquals(new int[] {0x03020100, 0x07060504, 0x0b0a0908, 0x0f0e0d0c, 0x13121110, 0x17161514}, (int[]) a.data());
    }
    Npy.Array be = Npy.read(npy(1, 0, "{\"descr\": \">i4\", \"fortran_order\": False, \"shape\": (1,)}", 4), "x");
    assertArrayEquals(new int[] {0x00010203}, (int[]) be.data());
    Npy.Array scalar = Npy.read(npy(1, 0, "{'descr': '|u1', 'fortran_order': False, 'shape': ()}", 1), "x");
    assertArrayEquals(new long[0], scalar.shape());
    assertEquals(1, scalar.size());
    Npy.Array py2 = Npy.read(npy(1, 0, "{'descr': '=u2', 'fortran_order': False, 'shape': (2L, 1L), }\n", 4), "x");
    assertArrayEquals(new long[] {2, 1}, py2.shape());
    // Fortran order is fine while at most one dimension is not 1.
    assertArrayEquals(new long[] {1, 3}, Npy.read(npy(1, 0, "{'descr': '<i4', 'fortran_order': True, 'shape': (1, 3)}", 12), "x").shape());
    assertArrayEquals(new long[] {3}, Npy.read(npy(1, 0, "{'descr': '<i4', 'fortran_order': True, 'shape': (3,)}", 12), "x").shape());
    // 32 dimensions is the limit.
    String dims32 = "(" + "1, ".repeat(32) + ")";
    assertEquals(32, Npy.read(npy(1, 0, "{'descr': '|u1', 'fortran_order': False, 'shape': " + dims32 + "}", 1), "x").shape().length);
  }

  @Test
  void preambleAtItsLimits() {
    rejects(ByteBuffer.wrap(new byte[9]), "truncated: 9 bytes is too short for a .npy file");
    ByteBuffer empty = npy(1, 0, "", 0);
    assertEquals(10, empty.remaining());
    rejects(empty, "bad .npy header at character 0: unexpected end of the header");
    ByteBuffer bad = npy(1, 0, C23, 24);
    bad.put(5, (byte) 'Z');
    rejects(bad, "not a .npy file (bad magic string)");
    rejects(npy(0, 0, C23, 24), "unsupported .npy format version 0.0");
    rejects(npy(4, 0, C23, 24), "unsupported .npy format version 4.0");
    rejects(npy(1, 1, C23, 24), "unsupported .npy format version 1.1");
    // Version 2: a 4-byte length needs 4 bytes; with 2 left it is truncated, with exactly 4 it is read.
    ByteBuffer v2 = ByteBuffer.allocate(10).put(new byte[] {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0, 0}).flip();
    rejects(v2, "truncated .npy header");
    ByteBuffer v2len = ByteBuffer.allocate(12).put(new byte[] {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0, 0, 0, 0}).flip();
    rejects(v2len, "bad .npy header at character 0: unexpected end of the header");
    // Header length: 1 MiB is the largest accepted, one more is implausible; one byte more than the file holds.
    ByteBuffer max = npy(2, 0, "", 0);
    max.putInt(8, 1 << 20);
    rejects(max, "truncated: .npy header declares 1048576 bytes, 0 remain");
    max.putInt(8, (1 << 20) + 1);
    rejects(max, ".npy header length 1048577 is implausible");
    ByteBuffer longer = npy(1, 0, C23, 0);
    longer.putShort(8, (short) (C23.length() + 1));
    rejects(longer, "truncated: .npy header declares " + (C23.length() + 1) + " bytes, " + C23.length() + " remain");
  }

  @Test
  void headerFieldsAtTheirLimits() {
    rejectsHeader("{'fortran_order': False, 'shape': (3,)}", ".npy header lacks a string 'descr'");
    rejectsHeader("{'descr': '<i4', 'shape': (3,)}", ".npy header lacks a boolean 'fortran_order'");
    rejectsHeader("{'descr': '<i4', 'fortran_order': False, 'shape': '3'}", ".npy header lacks a tuple 'shape'");
    rejectsHeader("{'descr': 'i4', 'fortran_order': False, 'shape': (3,)}",
        "unsupported dtype 'i4' (supported: |u1 |i1 <u2 <i4 <i8 <f4 <f8 |b1, also big-endian)");
    rejectsHeader("{'descr': '<i4 ', 'fortran_order': False, 'shape': (3,)}",
        "unsupported dtype '<i4 ' (supported: |u1 |i1 <u2 <i4 <i8 <f4 <f8 |b1, also big-endian)");
    rejectsHeader("{'descr': '!i4', 'fortran_order': False, 'shape': (3,)}",
        "unsupported dtype '!i4' (supported: |u1 |i1 <u2 <i4 <i8 <f4 <f8 |b1, also big-endian)");
    rejectsHeader("{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3)}",
        "Fortran-order arrays are not supported (save with C order, np.ascontiguousarray)");
    String dims33 = "{'descr': '|u1', 'fortran_order': False, 'shape': (" + "1, ".repeat(33) + ")}";
    rejectsHeader(dims33, "bad .npy header at character " + (dims33.length() - 1) + ": more than 32 dimensions");
    // Dimensions: 18 digits parse (then exceed int), 19 do not; the largest Java array is MAX_VALUE - 8.
    rejectsHeader("{'descr': '|u1', 'fortran_order': False, 'shape': (999999999999999999,)}",
        "dimension 999999999999999999 in shape [999999999999999999] exceeds 2147483647");
    String d19 = "{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000000000000,)}";
    rejectsHeader(d19, "bad .npy header at character " + d19.indexOf(',', 50) + ": shape dimension too large");
    rejectsHeader("{'descr': '|u1', 'fortran_order': False, 'shape': (2147483640,)}", "shape [2147483640] is too large for one Java array");
    rejectsHeader("{'descr': '|u1', 'fortran_order': False, 'shape': (2147483639,)}",
        "truncated: shape [2147483639] |u1 needs 2147483639 data bytes, the file has 0");
    rejects(npy(1, 0, C23, 23), "truncated: shape [2, 3] <i4 needs 24 data bytes, the file has 23");
    rejects(npy(1, 0, C23, 25), "1 unexpected bytes after the data of shape [2, 3] <i4");
  }

  @Test
  void malformedDictsNameThePosition() {
    rejectsHeader("{'descr': '<i4', 'descr': '<i4'}", "bad .npy header at character 31: duplicate key 'descr'");
    String trailing = "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), } x";
    rejectsHeader(trailing, "bad .npy header at character " + trailing.indexOf('x') + ": unexpected text after the header dict");
    rejectsHeader("{'descr' '<i4'}", "bad .npy header at character 9: expected ':'");
    rejectsHeader("{'descr", "bad .npy header at character 1: unterminated string");
    rejectsHeader("{descr: 1}", "bad .npy header at character 1: expected a string");
    rejectsHeader("{'descr': 1}", "bad .npy header at character 10: unsupported value");
    rejectsHeader("{'descr': '<i4' 'x': True}", "bad .npy header at character 16: expected ',' or '}'");
    rejectsHeader("{'shape': (-1,)}", "bad .npy header at character 11: expected a non-negative integer in the shape");
    rejectsHeader("{'shape': (3 4)}", "bad .npy header at character 13: expected ',' or ')' in the shape");
    rejectsHeader("{'shape': (3,", "bad .npy header at character 13: unexpected end of the header");
    // The header ending right after a digit (no ',' or 'L' to look at).
    rejectsHeader("{'shape': (3", "bad .npy header at character 12: unexpected end of the header");
    rejectsHeader("['descr']", "bad .npy header at character 0: expected '{'");
  }
}
