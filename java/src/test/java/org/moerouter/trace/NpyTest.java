// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class NpyTest {
  @TempDir Path dir;

  @Test
  void roundTripsEveryDtype() throws Exception {
    Object[] data = {new byte[] {0, (byte) 255, 7}, new byte[] {-1, 2, 3}, new short[] {(short) 65535, 1, 2}, new int[] {-5, 6, 7},
        new long[] {Long.MIN_VALUE, 0, 9}, new float[] {1.5f, -2f, Float.NaN}, new double[] {1e300, -0.0, 3}, new byte[] {1, 0, 1}};
    Npy.Dtype[] types = Npy.Dtype.values();
    for (int i = 0; i < types.length; i++) {
      Path p = dir.resolve(types[i] + ".npy");
      Npy.write(p, new Npy.Array(types[i], new long[] {3, 1}, data[i]));
      Npy.Array a = Npy.read(p);
      assertEquals(types[i], a.dtype());
      assertArrayEquals(new long[] {3, 1}, a.shape());
      assertTrue(Arrays.deepEquals(new Object[] {data[i]}, new Object[] {a.data()}), types[i].toString());
      // The bytes as numpy lays them out: magic, version 1.0, a header padded with spaces to a multiple of 64
      // ending in a newline, then the elements little-endian.
      byte[] f = Files.readAllBytes(p);
      String where = types[i].toString();
      assertArrayEquals(new byte[] {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0}, Arrays.copyOf(f, 8), where);
      int headerLen = (f[8] & 0xff) | (f[9] & 0xff) << 8;
      assertEquals(0, (10 + headerLen) % 64, where + ": header aligned to 64");
      String header = new String(f, 10, headerLen, StandardCharsets.ISO_8859_1);
      String descr = (types[i].itemSize() == 1 ? "|" : "<") + types[i].toString().toLowerCase(java.util.Locale.ROOT);
      assertTrue(header.startsWith("{'descr': '" + descr + "', 'fortran_order': False, 'shape': (3, 1), }"), where + ": " + header);
      assertEquals('\n', header.charAt(headerLen - 1), where);
      assertEquals(10 + headerLen + 3 * types[i].itemSize(), f.length, where + ": file size");
      ByteBuffer expected = ByteBuffer.allocate(3 * types[i].itemSize()).order(ByteOrder.LITTLE_ENDIAN);
      for (int j = 0; j < 3; j++) {
        Object d = data[i];
        if (d instanceof byte[]) expected.put(((byte[]) d)[j]);
        else if (d instanceof short[]) expected.putShort(((short[]) d)[j]);
        else if (d instanceof int[]) expected.putInt(((int[]) d)[j]);
        else if (d instanceof long[]) expected.putLong(((long[]) d)[j]);
        else if (d instanceof float[]) expected.putFloat(((float[]) d)[j]);
        else expected.putDouble(((double[]) d)[j]);
      }
      assertArrayEquals(expected.array(), Arrays.copyOfRange(f, 10 + headerLen, f.length), where + ": data bytes");
    }
    assertEquals(255, Npy.read(dir.resolve("U1.npy")).getLong(1));
    assertEquals(65535, Npy.read(dir.resolve("U2.npy")).toIntArray()[0]);
  }

  @Test
  void scalarAndOneDimensionalShapes() throws Exception {
    Path p = dir.resolve("v.npy");
    Npy.write(p, new int[] {1, 2, 3}, 3);
    assertTrue(new String(Files.readAllBytes(p), StandardCharsets.ISO_8859_1).contains("'shape': (3,)"));
    assertArrayEquals(new int[] {1, 2, 3}, Npy.read(p).toIntArray());
    Npy.write(p, new float[] {4f});
    assertEquals(0, Npy.read(p).ndim());
    assertEquals(4.0, Npy.read(p).getDouble(0));
  }

  private static byte[] file(int major, String dict, byte[] data) {
    byte[] h = dict.getBytes(StandardCharsets.ISO_8859_1);
    ByteBuffer b = ByteBuffer.allocate(6 + 2 + (major == 1 ? 2 : 4) + h.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
    b.put(new byte[] {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y'}).put((byte) major).put((byte) 0);
    if (major == 1) b.putShort((short) h.length);
    else b.putInt(h.length);
    return b.put(h).put(data).array();
  }

  @Test
  void readsVersion2AndBigEndian() {
    byte[] be = {0, 0, 0, 1, 0, 0, 0, 2};
    Npy.Array a = Npy.read(ByteBuffer.wrap(file(2, "{\"descr\": \">i4\", \"fortran_order\": False, \"shape\": (2, ), }\n", be)), "x");
    assertArrayEquals(new int[] {1, 2}, a.toIntArray());
  }

  private static String bad(byte[] f) {
    return assertThrows(TraceFormatException.class, () -> Npy.read(ByteBuffer.wrap(f), "f.npy")).getMessage();
  }

  @Test
  void badFilesGivePreciseErrors() {
    byte[] four = new byte[8];
    assertEquals("f.npy: not a .npy file (bad magic string)", bad("hello world!!".getBytes()));
    assertEquals("f.npy: truncated: 3 bytes is too short for a .npy file", bad(new byte[3]));
    assertEquals("f.npy: unsupported .npy format version 4.0", bad(file(4, "{}", four)));
    assertEquals("f.npy: unsupported dtype '<c8' (supported: |u1 |i1 <u2 <i4 <i8 <f4 <f8 |b1, also big-endian)",
        bad(file(1, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", four)));
    assertEquals("f.npy: Fortran-order arrays are not supported (save with C order, np.ascontiguousarray)",
        bad(file(1, "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 2), }", new byte[16])));
    assertEquals("f.npy: truncated: shape [3] <i4 needs 12 data bytes, the file has 8",
        bad(file(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", four)));
    assertEquals("f.npy: 4 unexpected bytes after the data of shape [1] <i4",
        bad(file(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", four)));
    assertEquals("f.npy: .npy header lacks a tuple 'shape'", bad(file(1, "{'descr': '<i4', 'fortran_order': False}", four)));
    assertTrue(bad(file(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (1,x), }", four)).startsWith("f.npy: bad .npy header at character"));
    assertTrue(bad(file(1, "{'descr': '<i4'", four)).contains("bad .npy header"));
    byte[] f = file(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", four);
    f[8] = (byte) 0xff; // header length beyond the file
    assertTrue(bad(f).startsWith("f.npy: truncated: .npy header declares"));
  }

  @Test
  void numpyReadsOurFilesAndWeReadNumpys() throws Exception {
    Assumptions.assumeTrue(TraceFilesTest.pythonWithNumpy(), "python3 with numpy not available");
    Path ours = dir.resolve("ours.npy"), theirs = dir.resolve("theirs.npy");
    Npy.write(ours, new int[] {1, 2, 3, 4, 5, 6}, 3, 1, 2);
    Process p = new ProcessBuilder("python3", "-c",
        "import numpy as np, sys; a = np.load(sys.argv[1]); print(a.shape, a.dtype, a.sum());"
            + "np.save(sys.argv[2], np.arange(24, dtype=np.uint16).reshape(2, 3, 4))",
        ours.toString(), theirs.toString()).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes()).trim();
    assertTrue(p.waitFor(60, TimeUnit.SECONDS));
    assertEquals("(3, 1, 2) int32 21", out);
    Npy.Array a = Npy.read(theirs);
    assertEquals(Npy.Dtype.U2, a.dtype());
    assertArrayEquals(new long[] {2, 3, 4}, a.shape());
    assertEquals(23, a.toIntArray()[23]);
  }
}
