// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.trace.Npy;

/** Values wider than int are checked before they are narrowed, and reported as they were given. */
class NarrowingTest {
  @TempDir Path dir;

  static MainTest.Run run(String... args) {
    return MainTest.run(args);
  }

  /** A .npy with a hand-written shape (Npy itself refuses to create these). */
  static void rawNpy(Path p, String descr, String shape, byte[] data) throws Exception {
    String dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
    int total = (10 + dict.length() + 1 + 63) / 64 * 64;
    StringBuilder h = new StringBuilder(dict);
    while (h.length() < total - 10 - 1) h.append(' ');
    h.append('\n');
    ByteBuffer b = ByteBuffer.allocate(total + data.length).order(ByteOrder.LITTLE_ENDIAN);
    b.put(new byte[] {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0}).putShort((short) h.length());
    b.put(h.toString().getBytes(StandardCharsets.ISO_8859_1)).put(data);
    Files.write(p, b.array());
  }

  @Test
  void hugeDimensionsAreReportedAsGivenNotTruncated() throws Exception {
    Path l = dir.resolve("wide.npy");
    rawNpy(l, "<f4", "(0, 4294967424)", new byte[0]);  // (int) 4294967424 == 128
    MainTest.Run r = run("route", "--logits", l.toString(), "--score", "softmax", "--topk", "2", "--out",
        dir.resolve("o").toString());
    assertEquals(1, r.status, r.out);
    assertTrue(r.err.startsWith("moe-router: error: " + l + ": dimension 4294967424 in shape [0, 4294967424]"), r.err);
    assertFalse(Files.exists(dir.resolve("o")));

    Path t = dir.resolve("trace.npy");
    rawNpy(t, "<i4", "(0, 1, 4294967300)", new byte[0]);  // (int) 4294967300 == 4
    r = run("trace", "convert", t.toString(), dir.resolve("t.safetensors").toString(), "--experts", "8");
    assertEquals(1, r.status, r.out);
    assertTrue(r.err.contains("4294967300"), r.err);
  }

  @Test
  void traceConvertIntegerOptionsAreRangeCheckedBeforeNarrowing() throws Exception {
    Path npy = dir.resolve("idx.npy");
    Npy.write(npy, new int[] {0, 1, 2, 3}, 2, 1, 2);  // [tokens 2, layers 1, k 2]
    Path out = dir.resolve("t.safetensors");
    // (int) 4294967360 == 64: narrowed unchecked, this silently wrote a trace of 64 experts.
    MainTest.Run r = run("trace", "convert", npy.toString(), out.toString(), "--experts", "4294967360");
    assertEquals(2, r.status, r.err);
    assertTrue(r.err.startsWith("moe-router: error: --experts must be in [1, 65536], got 4294967360\n"), r.err);
    assertFalse(Files.exists(out));
    r = run("trace", "convert", npy.toString(), out.toString(), "--experts", "65537");
    assertEquals(2, r.status, r.err);
    assertTrue(r.err.startsWith("moe-router: error: --experts must be in [1, 65536], got 65537\n"), r.err);
    r = run("trace", "convert", npy.toString(), out.toString(), "--experts", "0");
    assertEquals(2, r.status, r.err);
    assertTrue(r.err.startsWith("moe-router: error: --experts must be in [1, 65536], got 0\n"), r.err);
    assertFalse(Files.exists(out));

    assertEquals(0, run("trace", "convert", npy.toString(), out.toString(), "--experts", "64").status);
    Path slime = dir.resolve("s.npz");
    // (int) 4294967298 == 2: the export would have had 2 columns.
    r = run("trace", "convert", "--to", "slime", out.toString(), slime.toString(), "--num-layers", "4294967298");
    assertEquals(2, r.status, r.err);
    assertTrue(r.err.startsWith("moe-router: error: --num-layers must be in [1, 2147483647], got 4294967298\n"), r.err);
    assertFalse(Files.exists(slime));
  }

  @Test
  void int64ReplayIndicesOutOfRangeAreReportedWithTheirValue() throws Exception {
    int t = 3, e = 8, k = 2;
    Path l = dir.resolve("l.npy");
    Npy.write(l, new float[t * e], t, e);
    long[] idx = {0, 1, 2, 3, 4, 4294967299L};  // low 32 bits: 3, which would even look valid
    Path p = dir.resolve("idx.npy");
    Npy.write(p, new Npy.Array(Npy.Dtype.I8, new long[] {t, k}, idx));
    MainTest.Run r = run("route", "--logits", l.toString(), "--score", "softmax", "--topk", "2", "--replay",
        p.toString(), "--out", dir.resolve("o").toString());
    assertEquals(1, r.status);
    assertEquals("moe-router: error: " + p + ": replay index 4294967299 at row 2 position 1 is not an expert index"
        + " (or -1 padding)\n", r.err);
  }
}
