// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link TraceFiles#open} on hand-built safetensors files whose header fields sit exactly at a limit and one past
 * it: each accepted case opens with the exact layout, each rejected one fails with the exact message. These
 * closed the PIT survivors in {@code TraceFiles.parse}, {@code tensorInfo}, {@code checkRange} and {@code uint}.
 */
class TraceBoundaryCasesTest {
  @TempDir Path dir;
  private int fileNo;

  /** 3 tokens of 1 layer, k = 2, experts = 4: sample_offsets [0, 1, 3] at [0, 24], U8 indices at [24, 30]. */
  private static final long[] OFFSETS = {0, 1, 3};
  private static final byte[] INDICES = {0, 1, 1, 0, 0, 1};

  private static String meta(String experts, String topK, String layerIds, String extra) {
    return "\"__metadata__\":{\"format\":\"moe-router-trace\",\"format_version\":\"1\",\"model\":\"m\",\"experts\":\"" + experts
        + "\",\"top_k\":\"" + topK + "\",\"layer_ids\":\"" + layerIds + "\",\"score_function\":\"softmax\"" + extra + "}";
  }

  private static String tensor(String name, String dtype, String shape, long begin, long end) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" + begin + "," + end + "]}";
  }

  private static String header(String meta, String... tensors) {
    return "{" + meta + "," + String.join(",", tensors) + "}";
  }

  private static String base(String meta) {
    return header(meta, tensor("sample_offsets", "I64", "[3]", 0, 24), tensor("indices", "U8", "[3,1,2]", 24, 30));
  }

  private static byte[] data(long[] offsets, byte[] indices, int extra) {
    ByteBuffer b = ByteBuffer.allocate(offsets.length * 8 + indices.length + extra).order(ByteOrder.LITTLE_ENDIAN);
    for (long o : offsets) b.putLong(o);
    return b.put(indices).array();
  }

  private Path write(String header, byte[] data) throws IOException {
    byte[] json = header.getBytes(StandardCharsets.UTF_8);
    int padded = (json.length + 7) / 8 * 8;
    ByteBuffer b = ByteBuffer.allocate(8 + padded + data.length).order(ByteOrder.LITTLE_ENDIAN);
    b.putLong(padded).put(json);
    while (b.position() < 8 + padded) b.put((byte) ' ');
    b.put(data);
    Path p = dir.resolve("t" + (fileNo++) + ".safetensors");
    Files.write(p, b.array());
    return p;
  }

  private RoutingTrace opens(String header, byte[] data) throws IOException {
    return TraceFiles.open(write(header, data));
  }

  private void rejects(String header, byte[] data, String message) throws IOException {
    Path p = write(header, data);
    TraceFormatException e = assertThrows(TraceFormatException.class, () -> TraceFiles.open(p), message);
    assertEquals(p + ": " + message, e.getMessage());
  }

  private void rejects(String header, String message) throws IOException {
    rejects(header, data(OFFSETS, INDICES, 0), message);
  }

  @Test
  void theBaseFileOpensWithItsExactLayout() throws IOException {
    RoutingTrace t = opens(base(meta("4", "2", "[0]", "")), data(OFFSETS, INDICES, 0));
    assertEquals(4, t.experts());
    assertEquals(2, t.topK());
    assertEquals(2, t.samples());
    assertEquals(3, t.totalTokens());
    assertArrayEquals(OFFSETS, t.sampleOffsets());
    assertArrayEquals(new int[] {0, 1}, t.sample(0));
    assertArrayEquals(new int[] {1, 0, 0, 1}, t.sample(1));
    assertFalse(t.hasMask());
  }

  @Test
  void expertsAndTopKAtTheirLimits() throws IOException {
    rejects(base(meta("0", "2", "[0]", "")), "experts = 0 outside [1, 65536]");
    rejects(base(meta("65537", "2", "[0]", "")), "experts = 65537 outside [1, 65536]");
    rejects(base(meta("2147483647", "2", "[0]", "")), "experts = 2147483647 outside [1, 65536]");
    rejects(base(meta("2147483648", "2", "[0]", "")), "metadata experts = '2147483648' is not a non-negative integer");
    rejects(base(meta("04", "2", "[0]", "")), "metadata experts = '04' is not a non-negative integer");
    rejects(base(meta("-4", "2", "[0]", "")), "metadata experts = '-4' is not a non-negative integer");
    rejects(base(meta("4", "0", "[0]", "")), "top_k = 0 outside [1, experts=4]");
    rejects(base(meta("1", "2", "[0]", "")), "top_k = 2 outside [1, experts=1]");
    // top_k == experts is allowed.
    assertEquals(2, opens(base(meta("2", "2", "[0]", "")), data(OFFSETS, INDICES, 0)).experts());
    // 256 experts is the last U8 width, 257 the first U16, 65536 the last.
    assertEquals("U8", opens(base(meta("256", "2", "[0]", "")), data(OFFSETS, INDICES, 0)).indexDtype());
    rejects(base(meta("257", "2", "[0]", "")), "tensor 'indices' has dtype U8 (experts metadata implies U16)");
    String u16 = header(meta("65536", "2", "[0]", ""), tensor("sample_offsets", "I64", "[3]", 0, 24),
        tensor("indices", "U16", "[3,1,2]", 24, 36));
    RoutingTrace wide = opens(u16, data(OFFSETS, new byte[] {(byte) 0xff, (byte) 0xff, 1, 0, 0, 0, 2, 0, 3, 0, 4, 0}, 0));
    assertEquals("U16", wide.indexDtype());
    assertArrayEquals(new int[] {65535, 1}, wide.sample(0));
  }

  @Test
  void versionsAndLayerIds() throws IOException {
    rejects(base(meta("4", "2", "[0]", "").replace("\"format_version\":\"1\"", "\"format_version\":\"3\"")),
        "unsupported trace format version '3' (this library reads 1 and 2)");
    rejects(base(meta("4", "2", "[]", "")), "metadata layer_ids = '[]' is not a non-empty JSON array of integers");
    rejects(base(meta("4", "2", "[0,0]", "")), "metadata layer_ids repeats layer 0");
    rejects(base(meta("4", "2", "[2147483648]", "")), "metadata layer_ids[0] = 2147483648 is not an int");
    rejects(base(meta("4", "2", "[-2147483649]", "")), "metadata layer_ids[0] = -2147483649 is not an int");
    rejects(base(meta("4", "2", "[1.0]", "")), "metadata layer_ids[0] = 1.0 is not an int");
    assertArrayEquals(new int[] {2147483647}, opens(base(meta("4", "2", "[2147483647]", "")), data(OFFSETS, INDICES, 0)).layerIds());
    assertArrayEquals(new int[] {-2147483648}, opens(base(meta("4", "2", "[-2147483648]", "")), data(OFFSETS, INDICES, 0)).layerIds());
    rejects(base(meta("4", "2", "[0,1]", "")), "indices shape [3, 1, 2] has 1 layers, layer_ids lists 2");
    rejects(base(meta("4", "2", "[0]", ",\"mtp_layer_ids\":\"[5]\"")), "indices shape [3, 1, 2] has 1 layers, layer_ids lists 2");
    assertEquals(0, opens(base(meta("4", "2", "[0]", ",\"mtp_layer_ids\":\"[]\"")), data(OFFSETS, INDICES, 0)).mtpLayers());
    rejects(base(meta("4", "1", "[0]", "")), "indices shape [3, 1, 2] has k = 2, top_k is 1");
    rejects(base(meta("4", "2", "[0]", ",\"checksum\":\"crc32:0000000\"")), "checksum 'crc32:0000000' is not of the form crc32:xxxxxxxx");
    rejects(base(meta("4", "2", "[0]", ",\"checksum\":\"crc32:0000000G\"")), "checksum 'crc32:0000000G' is not of the form crc32:xxxxxxxx");
  }

  @Test
  void dataOffsetsAtTheirLimits() throws IOException {
    String m = meta("4", "2", "[0]", "");
    String off = tensor("sample_offsets", "I64", "[3]", 0, 24);
    // Tiled and of the right total length, but sample_offsets one byte short of its 3 x 8 bytes.
    rejects(header(m, tensor("sample_offsets", "I64", "[3]", 0, 23), tensor("indices", "U8", "[3,1,2]", 23, 29)),
        java.util.Arrays.copyOf(data(OFFSETS, INDICES, 0), 29),
        "tensor 'sample_offsets' data_offsets [0, 23] span 23 bytes, its dtype and shape need 24");
    rejects(header(m, off, tensor("indices", "U8", "[3,1,2]", 24, 29)),
        "tensor 'indices' data_offsets [24, 29] span 5 bytes, its dtype and shape need 6");
    rejects(header(m, off, tensor("indices", "U8", "[3,1,2]", 24, 31)),
        "tensor 'indices' data_offsets [24, 31] span 7 bytes, its dtype and shape need 6");
    rejects(header(m, off, tensor("indices", "U8", "[3,1,2]", 30, 24)),
        "tensor 'indices' data_offsets [30, 24] span -6 bytes, its dtype and shape need 6");
    rejects(header(m, off, tensor("indices", "U8", "[3,1,2]", -1, 5)),
        "tensor 'indices' data_offsets holds -1, expected a non-negative integer");
    rejects(header(m, off, tensor("indices", "U8", "[3,1,2]", 24, (1L << 50) + 1)),
        "tensor 'indices' data_offsets holds 1125899906842625, expected a non-negative integer");
    rejects(header(m, off, tensor("indices", "U8", "[3,1,2]", 24, 1L << 50)),
        "tensor 'indices' data_offsets [24, 1125899906842624] span 1125899906842600 bytes, its dtype and shape need 6");
    rejects(header(m, off, tensor("indices", "U8", "[3,1,-2]", 24, 30)),
        "tensor 'indices' shape holds -2, expected a non-negative integer");
    rejects(header(m, off, tensor("indices", "U8", "[3,1]", 24, 30)),
        "tensor 'indices' has shape [3,1], expected 3 dimensions");
    rejects(header(m, tensor("sample_offsets", "I64", "[0]", 0, 0), tensor("indices", "U8", "[3,1,2]", 0, 6)),
        "sample_offsets has shape [0], needs at least 1 entry");
    rejects(header(m, tensor("sample_offsets", "I32", "[3]", 0, 24), tensor("indices", "U8", "[3,1,2]", 24, 30)),
        "tensor 'sample_offsets' has dtype I32 (expected I64)");
    // A gap of one byte, a first tensor one byte in, and an overlap of one byte.
    rejects(header(m, off, tensor("indices", "U8", "[3,1,2]", 25, 31)), data(OFFSETS, INDICES, 1),
        "tensor data_offsets leave a gap or overlap: [0, 24] and [25, 31]");
    rejects(header(m, tensor("sample_offsets", "I64", "[3]", 1, 25), tensor("indices", "U8", "[3,1,2]", 25, 31)),
        data(OFFSETS, INDICES, 1), "tensor data_offsets leave a gap or overlap: [1, 25] and [25, 31]");
    rejects(header(m, off, tensor("indices", "U8", "[3,1,2]", 23, 29)),
        "tensor data_offsets leave a gap or overlap: [0, 24] and [23, 29]");
    // The file one byte short and one byte long.
    rejects(base(m), java.util.Arrays.copyOf(data(OFFSETS, INDICES, 0), 29), "truncated: the tensors need 30 data bytes, the file has 29");
    rejects(base(m), data(OFFSETS, INDICES, 1), "1 unexpected bytes after the tensor data");
    // Tensors in the other order are fine: only the sorted ranges must tile the data.
    ByteBuffer swapped = ByteBuffer.allocate(30).order(ByteOrder.LITTLE_ENDIAN).put(INDICES);
    for (long o : OFFSETS) swapped.putLong(o);
    RoutingTrace t = opens(header(m, tensor("indices", "U8", "[3,1,2]", 0, 6), tensor("sample_offsets", "I64", "[3]", 6, 30)),
        swapped.array());
    assertArrayEquals(OFFSETS, t.sampleOffsets());
    assertArrayEquals(new int[] {1, 0, 0, 1}, t.sample(1));
  }

  @Test
  void sampleOffsetsAtTheirLimits() throws IOException {
    String b = base(meta("4", "2", "[0]", ""));
    rejects(b, data(new long[] {1, 1, 3}, INDICES, 0), "sample_offsets[0] is 1, must be 0");
    rejects(b, data(new long[] {0, 4, 3}, INDICES, 0), "sample_offsets[1] = 4 is not in [0, 3]");
    rejects(b, data(new long[] {0, 2, 1}, INDICES, 0), "sample_offsets[2] = 1 is not in [2, 3]");
    rejects(b, data(new long[] {0, 1, 2}, INDICES, 0), "sample_offsets end at 2, indices hold 3 tokens");
    // Equal neighbours and an offset equal to the token count are in range.
    RoutingTrace t = opens(b, data(new long[] {0, 3, 3}, INDICES, 0));
    assertEquals(3, t.sampleTokens(0));
    assertEquals(0, t.sampleTokens(1));
    t = opens(b, data(new long[] {0, 0, 3}, INDICES, 0));
    assertEquals(0, t.sampleTokens(0));
    assertEquals(3, t.sampleTokens(1));
    // One entry: no samples, no tokens.
    t = opens(header(meta("4", "2", "[0]", ""), tensor("sample_offsets", "I64", "[1]", 0, 8), tensor("indices", "U8", "[0,1,2]", 8, 8)),
        data(new long[] {0}, new byte[0], 0));
    assertEquals(0, t.samples());
    assertEquals(0, t.totalTokens());
  }

  @Test
  void masksAndTheHeaderLength() throws IOException {
    String m = meta("4", "2", "[0]", "");
    String off = tensor("sample_offsets", "I64", "[3]", 0, 24), idx = tensor("indices", "U8", "[3,1,2]", 24, 30);
    byte[] withMask = data(OFFSETS, new byte[] {0, 1, 1, 0, 0, 1, 1, 0, 1}, 0);
    RoutingTrace t = opens(header(m, off, idx, tensor("mask", "U8", "[3]", 30, 33)), withMask);
    assertTrue(t.hasMask());
    assertEquals(1, t.maskedTokens());
    assertTrue(opens(header(m, off, idx, tensor("mask", "BOOL", "[3]", 30, 33)), withMask).hasMask());
    rejects(header(m, off, idx, tensor("mask", "I8", "[3]", 30, 33)), withMask, "tensor 'mask' has dtype I8 (expected U8 or BOOL)");
    rejects(header(m, off, idx, tensor("mask", "U8", "[2]", 30, 32)), java.util.Arrays.copyOf(withMask, 32),
        "mask shape [2] does not match the 3 tokens of indices");
    rejects(header(m, off, idx, tensor("mask", "U8", "[4]", 30, 34)), java.util.Arrays.copyOf(withMask, 34),
        "mask shape [4] does not match the 3 tokens of indices");
    rejects(header(m, off, idx, tensor("mask", "U8", "[3]", 30, 32)), withMask,
        "tensor 'mask' data_offsets [30, 32] span 2 bytes, its dtype and shape need 3");
    rejects(header(m, off, idx, tensor("extra", "U8", "[3]", 30, 33)), withMask,
        "unexpected tensor 'extra' (a trace holds 'indices', 'sample_offsets' and optionally 'mask')");

    // Header length 1 (below the minimum of 2) and one byte more than the file holds.
    Path p = dir.resolve("short.safetensors");
    Files.write(p, ByteBuffer.allocate(9).order(ByteOrder.LITTLE_ENDIAN).putLong(1).put((byte) '{').array());
    TraceFormatException e = assertThrows(TraceFormatException.class, () -> TraceFiles.open(p));
    assertEquals(p + ": header length 1 is invalid (must be in [2, 100000000])", e.getMessage());
    Files.write(p, ByteBuffer.allocate(10).order(ByteOrder.LITTLE_ENDIAN).putLong(3).put((byte) '{').put((byte) '}').array());
    e = assertThrows(TraceFormatException.class, () -> TraceFiles.open(p));
    assertEquals(p + ": truncated: header declares 3 bytes, the file has 2 after the length", e.getMessage());
    Files.write(p, new byte[7]);
    e = assertThrows(TraceFormatException.class, () -> TraceFiles.open(p));
    assertEquals(p + ": truncated: 7 bytes is too short for a safetensors header length", e.getMessage());
  }
}
