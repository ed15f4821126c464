// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Generic safetensors files, as Python writes them: every supported dtype, and precise errors. */
class SafetensorsTest {
  @TempDir Path dir;

  @Test
  void roundTripsEveryDtypeAlignedByItemSize() throws Exception {
    Map<String, Npy.Array> t = new LinkedHashMap<>();
    t.put("mask", new Npy.Array(Npy.Dtype.B1, new long[] {3}, new byte[] {1, 0, 1}));
    t.put("u8", new Npy.Array(Npy.Dtype.U1, new long[] {1, 3}, new byte[] {0, (byte) 255, 7}));
    t.put("i32", new Npy.Array(Npy.Dtype.I4, new long[] {2, 1, 2}, new int[] {-1, 5, 6, 7}));
    t.put("u16", new Npy.Array(Npy.Dtype.U2, new long[] {2}, new short[] {(short) 65535, 1}));
    t.put("i64", new Npy.Array(Npy.Dtype.I8, new long[] {1}, new long[] {1L << 40}));
    t.put("empty", new Npy.Array(Npy.Dtype.F4, new long[] {0, 4}, new float[0]));
    Path p = dir.resolve("x.safetensors");
    Safetensors.write(p, Map.of("k", "v"), t);
    Safetensors.Contents c = Safetensors.read(p);
    assertEquals(Map.of("k", "v"), c.metadata());
    assertEquals(t.keySet(), c.arrays().keySet(), "header order kept");
    for (String name : t.keySet()) {
      assertEquals(t.get(name).dtype(), c.arrays().get(name).dtype(), name);
      assertArrayEquals(t.get(name).shape(), c.arrays().get(name).shape(), name);
      assertTrue(java.util.Arrays.deepEquals(new Object[] {t.get(name).data()}, new Object[] {c.arrays().get(name).data()}), name);
    }
    // Data laid out by descending item size: each tensor starts at a multiple of its item size.
    String h = TraceTestSupport.headerText(Files.readAllBytes(p));
    assertTrue(h.contains("\"i64\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}"), h);
    assertTrue(h.contains("\"i32\":{\"dtype\":\"I32\",\"shape\":[2,1,2],\"data_offsets\":[8,24]}"), h);
    assertEquals(0, TraceTestSupport.headerLength(Files.readAllBytes(p)) % 8);
  }

  private String rejected(String header, int dataBytes) throws Exception {
    byte[] json = header.getBytes(StandardCharsets.UTF_8);
    ByteBuffer b = ByteBuffer.allocate(8 + json.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
    b.putLong(json.length).put(json);
    Path p = dir.resolve("bad.safetensors");
    Files.write(p, b.array());
    TraceFormatException e = assertThrows(TraceFormatException.class, () -> Safetensors.read(p));
    assertTrue(e.getMessage().startsWith(p + ": "), e.getMessage());
    return e.getMessage().substring(p.toString().length() + 2);
  }

  @Test
  void malformedFilesAreRejectedNamingTheTensor() throws Exception {
    assertEquals("tensor 'b' starts at data byte 4, 'a' ends at 8: the tensors leave a gap or overlap",
        rejected("{\"a\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8));
    assertEquals("tensor 'a' data_offsets [0, 4] span 4 bytes, its dtype and shape need 8",
        rejected("{\"a\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4));
    assertEquals("tensor 'a' has dtype BF16, not supported here (BOOL U8 I8 U16 I32 I64 F32 F64)",
        rejected("{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4));
    assertEquals("tensor 'a' has unknown dtype Q4", rejected("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4));
    assertEquals("truncated: the tensors need 8 data bytes, the file has 7",
        rejected("{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 7));
    assertEquals("1 unexpected bytes after the tensor data", rejected("{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 9));
    assertTrue(rejected("{\"a\":1,\"a\":2}", 0).startsWith("header is not valid JSON: duplicate key \"a\""));
    assertEquals("tensor 'a' shape holds -1, expected a non-negative integer",
        rejected("{\"a\":{\"dtype\":\"I64\",\"shape\":[-1],\"data_offsets\":[0,8]}}", 8));
  }
}
