// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.MoeRouterException;
import org.moerouter.Status;

/**
 * The file formats at the limits PIT found untested (docs/testing.md, "org.moerouter.trace after the trace
 * survivor tests"): {@link Npy.Array}'s conversions (int8, floats holding integers, the 9e15 limit), .npz
 * archives through {@link Npy}, header whitespace and latin-1/UTF-8 header text, every safetensors dtype with
 * its header entry, safetensors headers of exactly 8, 2 and 10^8 bytes, the 8-byte padding of written headers,
 * and {@link TraceFiles}' format version, kept metadata, masked .npy exports and .npy imports.
 */
class TraceIoPitSurvivorsTest {
  @TempDir Path dir;

  // ------------------------------------------------------------------ Npy.Array

  @Test
  void int8AndFloatArraysConvertExactly() {
    Npy.Array i1 = new Npy.Array(Npy.Dtype.I1, new long[] {2, 2}, new byte[] {-1, 5, 127, -128});
    assertEquals(2, i1.ndim());
    assertEquals(2, i1.dim(0));
    assertEquals(2, i1.dim(1));
    assertEquals(-1, i1.getLong(0));
    assertEquals(-128, i1.getLong(3));
    assertEquals(-1.0, i1.getDouble(0));
    assertArrayEquals(new int[] {-1, 5, 127, -128}, i1.toIntArray());
    assertArrayEquals(new float[] {-1, 5, 127, -128}, i1.toFloatArray());
    assertEquals("Npy.Array{|i1, shape=[2, 2]}", i1.toString());

    Npy.Array f4 = new Npy.Array(Npy.Dtype.F4, new long[] {3}, new float[] {1.0f, -3.0f, 2.5f});
    assertEquals(1, f4.ndim());
    assertEquals(-3, f4.getLong(1));
    assertEquals(2.5, f4.getDouble(2));
    assertEquals("element 2 (2.5) is not an integer", assertThrows(TraceFormatException.class, () -> f4.getLong(2)).getMessage());
    assertArrayEquals(new float[] {1.0f, -3.0f, 2.5f}, f4.toFloatArray());

    double big = 9.0e15;
    Npy.Array f8 = new Npy.Array(Npy.Dtype.F8, new long[] {6},
        new double[] {4.0, big, -big, big + 1, Double.POSITIVE_INFINITY, Double.NaN});
    assertEquals("Npy.Array{<f8, shape=[6]}", f8.toString());
    assertEquals(4, f8.getLong(0));
    assertEquals(9_000_000_000_000_000L, f8.getLong(1));
    assertEquals(-9_000_000_000_000_000L, f8.getLong(2));
    assertEquals(big + 1, f8.getDouble(3));
    assertEquals("element 3 (9.000000000000001E15) is not an integer",
        assertThrows(TraceFormatException.class, () -> f8.getLong(3)).getMessage());
    assertEquals("element 4 (Infinity) is not an integer", assertThrows(TraceFormatException.class, () -> f8.getLong(4)).getMessage());
    assertEquals("element 5 (NaN) is not an integer", assertThrows(TraceFormatException.class, () -> f8.getLong(5)).getMessage());
    assertArrayEquals(new float[] {4.0f, 9.0e15f, -9.0e15f, (float) (big + 1), Float.POSITIVE_INFINITY, Float.NaN}, f8.toFloatArray());
  }

  @Test
  void aDimensionOfExactlyIntMaxIsAllowedWhenTheArrayIsEmpty() {
    Npy.Array a = new Npy.Array(Npy.Dtype.U1, new long[] {Integer.MAX_VALUE, 0}, new byte[0]);
    assertEquals(Integer.MAX_VALUE, a.dim(0));
    assertEquals(0, a.size());
    TraceFormatException e = assertThrows(TraceFormatException.class,
        () -> new Npy.Array(Npy.Dtype.U1, new long[] {Integer.MAX_VALUE + 1L, 0}, new byte[0]));
    assertEquals("shape: dimension 2147483648 in shape [2147483648, 0] exceeds 2147483647", e.getMessage());
  }

  // ------------------------------------------------------------------ .npz and .npy headers

  @Test
  void npzArchivesRoundTripInOrderWithFixedEntryTimes() throws Exception {
    Map<String, Npy.Array> arrays = new LinkedHashMap<>();
    arrays.put("zeta", new Npy.Array(Npy.Dtype.I4, new long[] {2, 3}, new int[] {1, 2, 3, 4, 5, 6}));
    arrays.put("alpha", new Npy.Array(Npy.Dtype.F8, new long[] {2}, new double[] {0.5, -2}));
    Path p = dir.resolve("a.npz");
    Npy.writeNpz(p, arrays);
    Map<String, Npy.Array> back = Npy.readNpz(p);
    assertEquals(List.of("zeta", "alpha"), new ArrayList<>(back.keySet()));
    assertArrayEquals(new int[] {1, 2, 3, 4, 5, 6}, (int[]) back.get("zeta").data());
    assertArrayEquals(new long[] {2, 3}, back.get("zeta").shape());
    assertArrayEquals(new double[] {0.5, -2}, (double[]) back.get("alpha").data());
    try (ZipFile z = new ZipFile(p.toFile())) {
      List<String> names = new ArrayList<>();
      for (ZipEntry e : Collections.list(z.entries())) {
        names.add(e.getName());
        assertEquals(ZipEntry.STORED, e.getMethod());
        // the earliest DOS time (1980), whatever the clock: the bytes depend only on the arrays
        assertTrue(e.getTime() < 400_000_000_000L, e.getName() + " time " + e.getTime());
      }
      assertEquals(List.of("zeta.npy", "alpha.npy"), names);
    }
  }

  static byte[] npy(int major, byte[] header, byte[] data) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    out.writeBytes(new byte[] {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y', (byte) major, 0});
    ByteBuffer len = ByteBuffer.allocate(major == 1 ? 2 : 4).order(ByteOrder.LITTLE_ENDIAN);
    if (major == 1) len.putShort((short) header.length);
    else len.putInt(header.length);
    out.writeBytes(len.array());
    out.writeBytes(header);
    out.writeBytes(data);
    return out.toByteArray();
  }

  @Test
  void headersWithWhitespaceInsideTheDictAndTheShapeAreRead() {
    byte[] h = " \t{ 'descr': '<i4', 'fortran_order': False, 'shape': ( 2 , ), }\n".getBytes(StandardCharsets.ISO_8859_1);
    Npy.Array a = Npy.read(ByteBuffer.wrap(npy(1, h, new byte[] {7, 0, 0, 0, -1, -1, -1, -1})), "x.npy");
    assertArrayEquals(new int[] {7, -1}, (int[]) a.data());
    assertArrayEquals(new long[] {2}, a.shape());
  }

  @Test
  void headerTextIsLatin1UpToVersion2AndUtf8InVersion3() {
    byte[] v1 = "{'descr': '<\u00e94', 'fortran_order': False, 'shape': (1,), }\n".getBytes(StandardCharsets.ISO_8859_1);
    TraceFormatException e1 = assertThrows(TraceFormatException.class, () -> Npy.read(ByteBuffer.wrap(npy(1, v1, new byte[4])), "v1.npy"));
    assertTrue(e1.getMessage().startsWith("v1.npy: unsupported dtype '<\u00e94'"), e1.getMessage());
    byte[] v3 = "{'descr': '<\u00e94', 'fortran_order': False, 'shape': (1,), }\n".getBytes(StandardCharsets.UTF_8);
    TraceFormatException e3 = assertThrows(TraceFormatException.class, () -> Npy.read(ByteBuffer.wrap(npy(3, v3, new byte[4])), "v3.npy"));
    assertTrue(e3.getMessage().startsWith("v3.npy: unsupported dtype '<\u00e94'"), e3.getMessage());
  }

  @Test
  void aSpaceAfterABackslashIsNamedAsItself() {
    // characters from U+0020 on are printed as they are, those below as U+XXXX
    Json.ParseException e = assertThrows(Json.ParseException.class, () -> Json.parse("\"\\ \""));
    assertEquals("invalid escape '\\ ' at character 1", e.getMessage());
  }

  // ------------------------------------------------------------------ safetensors

  static Map<String, Npy.Array> everyDtype() {
    Map<String, Npy.Array> t = new LinkedHashMap<>();
    t.put("b", new Npy.Array(Npy.Dtype.B1, new long[] {3}, new byte[] {1, 0, 1}));
    t.put("u8", new Npy.Array(Npy.Dtype.U1, new long[] {2}, new byte[] {(byte) 255, 1}));
    t.put("i8", new Npy.Array(Npy.Dtype.I1, new long[] {2}, new byte[] {-128, 127}));
    t.put("u16", new Npy.Array(Npy.Dtype.U2, new long[] {1, 2}, new short[] {(short) 65535, 2}));
    t.put("i32", new Npy.Array(Npy.Dtype.I4, new long[] {2}, new int[] {Integer.MIN_VALUE, 3}));
    t.put("i64", new Npy.Array(Npy.Dtype.I8, new long[] {1}, new long[] {Long.MAX_VALUE}));
    t.put("f32", new Npy.Array(Npy.Dtype.F4, new long[] {2}, new float[] {0.5f, -0f}));
    t.put("f64", new Npy.Array(Npy.Dtype.F8, new long[] {2, 1}, new double[] {Math.PI, -1e300}));
    return t;
  }

  @Test
  void everyDtypeRoundTripsWithItsHeaderEntry() throws Exception {
    Path p = dir.resolve("all.safetensors");
    Map<String, Npy.Array> t = everyDtype();
    Safetensors.write(p, Map.of("k", "v"), t);
    Safetensors.Header h = Safetensors.readHeader(p);
    assertTrue(h.hasMetadata());
    assertEquals(Map.of("k", "v"), h.metadata());
    assertEquals(List.of("b", "u8", "i8", "u16", "i32", "i64", "f32", "f64"), new ArrayList<>(h.tensors().keySet()));
    String[] dtypes = {"BOOL", "U8", "I8", "U16", "I32", "I64", "F32", "F64"};
    int i = 0;
    for (Map.Entry<String, Safetensors.TensorInfo> e : h.tensors().entrySet()) {
      Safetensors.TensorInfo info = e.getValue();
      assertEquals(e.getKey(), info.name());
      assertEquals(dtypes[i++], info.dtype());
      assertArrayEquals(t.get(e.getKey()).shape(), info.shape());
    }
    assertEquals("u16 U16 [1, 2]", h.tensors().get("u16").toString());

    Safetensors.Contents c = Safetensors.read(p);
    for (Map.Entry<String, Npy.Array> e : t.entrySet()) {
      Npy.Array a = c.get(e.getKey(), p);
      assertEquals(e.getValue().dtype(), a.dtype(), e.getKey());
      assertArrayEquals(e.getValue().shape(), a.shape(), e.getKey());
      assertEquals(e.getValue().toString(), a.toString());
      for (int j = 0; j < a.size(); j++) assertEquals(e.getValue().getDouble(j), a.getDouble(j), e.getKey() + "[" + j + "]");
    }
    assertEquals(Double.doubleToRawLongBits(-0.0), Double.doubleToRawLongBits(c.arrays().get("f32").getDouble(1)));
    assertEquals(p + ": no tensor 'nope' (tensors: [b, u8, i8, u16, i32, i64, f32, f64])",
        assertThrows(TraceFormatException.class, () -> c.get("nope", p)).getMessage());

    // the header is padded with at most 7 spaces to a multiple of 8, so every tensor starts aligned
    byte[] f = Files.readAllBytes(p);
    long n = TraceTestSupport.headerLength(f);
    int json = TraceTestSupport.headerText(f).length();
    assertEquals(0, n % 8);
    assertTrue(n >= json && n < json + 8, n + " bytes for " + json);

    Path q = dir.resolve("nometa.safetensors");
    Safetensors.write(q, null, Map.of("x", t.get("i8")));
    assertFalse(Safetensors.readHeader(q).hasMetadata());
    assertEquals(Map.of(), Safetensors.read(q).metadata());
    Path r = dir.resolve("emptymeta.safetensors");
    Safetensors.write(r, Map.of(), Map.of("x", t.get("i8")));
    assertTrue(Safetensors.readHeader(r).hasMetadata());
  }

  /** A safetensors file with header length {@code n} (as given) and header text {@code text}, then data. */
  Path raw(String name, long n, String text, byte[] data) throws Exception {
    byte[] h = text.getBytes(StandardCharsets.UTF_8);
    ByteBuffer b = ByteBuffer.allocate(8 + h.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
    b.putLong(n).put(h).put(data);
    Path p = dir.resolve(name);
    Files.write(p, b.array());
    return p;
  }

  static String fails(Path p) {
    return assertThrows(TraceFormatException.class, () -> Safetensors.read(p)).getMessage();
  }

  @Test
  void headerLengthsAtTheirLimits() throws Exception {
    Path eight = raw("eight.safetensors", 0, "", new byte[0]);
    assertEquals(eight + ": header length 0 is invalid (must be in [2, 100000000])", fails(eight));
    Path seven = dir.resolve("seven.safetensors");
    Files.write(seven, new byte[7]);
    assertEquals(seven + ": truncated: 7 bytes is too short for a safetensors header length", fails(seven));

    Path empty = raw("empty.safetensors", 2, "{}", new byte[0]);
    Safetensors.Contents c = Safetensors.read(empty);
    assertTrue(c.arrays().isEmpty());
    assertFalse(c.header().hasMetadata());
    Path spaces = raw("spaces.safetensors", 2, "  ", new byte[0]);
    assertEquals(spaces + ": header is not a JSON object", fails(spaces));
    assertEquals(spaces + ": header is not a JSON object",
        assertThrows(TraceFormatException.class, () -> Safetensors.readHeader(spaces)).getMessage());

    Path max = raw("max.safetensors", TraceFiles.MAX_HEADER, "{}", new byte[0]);
    assertEquals(max + ": truncated: header declares 100000000 bytes, the file has 2 after the length", fails(max));
    Path over = raw("over.safetensors", TraceFiles.MAX_HEADER + 1, "{}", new byte[0]);
    assertEquals(over + ": header length 100000001 is invalid (must be in [2, 100000000])", fails(over));
  }

  @Test
  void tensorSpansAndTheLargestOffsetAreNamed() throws Exception {
    String h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
        + "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[4,10]}}";
    Path span = raw("span.safetensors", h.length(), h, new byte[10]);
    assertEquals(span + ": tensor 'b' data_offsets [4, 10] span 6 bytes, its dtype and shape need 8", fails(span));

    long limit = 1L << 50;
    String big = "{\"a\":{\"dtype\":\"U8\",\"shape\":[" + limit + "],\"data_offsets\":[0," + limit + "]}}";
    Path p = raw("big.safetensors", big.length(), big, new byte[0]);
    assertEquals(p + ": truncated: the tensors need " + limit + " data bytes, the file has 0", fails(p));
  }

  // ------------------------------------------------------------------ TraceFiles

  static JsonNode meta(Path p) throws Exception {
    return TraceTestSupport.JSON.readTree(TraceTestSupport.headerText(Files.readAllBytes(p))).get("__metadata__");
  }

  @Test
  void tracesWithoutMaskOrMtpAreVersion1AndHeadersAreAligned() throws Exception {
    RoutingTrace t = RoutingTracePitSurvivorsTest.small();
    Path p = dir.resolve("v1.safetensors");
    TraceFiles.write(t, p);
    JsonNode m = meta(p);
    assertEquals(TraceFiles.FORMAT_VERSION, m.get("format_version").asText());
    assertFalse(m.has("mtp_layer_ids"));
    byte[] f = Files.readAllBytes(p);
    long n = TraceTestSupport.headerLength(f);
    int json = TraceTestSupport.headerText(f).length();
    assertEquals(0, n % 8);
    assertTrue(n >= json && n < json + 8, n + " bytes for " + json);
  }

  @Test
  void metadataOfAnotherToolIsKeptWhenATraceIsWrittenAgain() throws Exception {
    Path p = dir.resolve("extra.safetensors");
    TraceFiles.write(RoutingTracePitSurvivorsTest.small(), p);
    byte[] f = TraceTestSupport.rewriteHeader(Files.readAllBytes(p),
        h -> h.replace("\"__metadata__\":{", "\"__metadata__\":{\"run\":\"42\","));
    Files.write(p, TraceTestSupport.resign(f));
    RoutingTrace t = TraceFiles.read(p);
    Path q = dir.resolve("again.safetensors");
    TraceFiles.write(t, q);
    assertEquals("42", meta(q).get("run").asText());
    TraceFiles.write(t.slice(0, 2), q);
    assertFalse(meta(q).has("run")); // a slice is a new trace: no source, no metadata of another tool
  }

  @Test
  void aMaskedTraceIsNotExportedToAPlainNpy() {
    RoutingTrace t = RoutingTrace.builder("m", 4, 2, new int[] {0}, "s")
        .addSample(new int[] {0, 1}).addSample(new int[] {0, 1, 2, 3}, new byte[] {1, 0}).build();
    String want = "the trace has 1 unrecorded (mask 0) tokens and a plain .npy has no mask;"
        + " export with TraceInterop (trace convert --to megatron|miles|verl) and choose how to write them";
    Path p = dir.resolve("x.npy");
    assertEquals(want, assertThrows(TraceFormatException.class, () -> TraceFiles.exportNpy(t, p)).getMessage());
    assertEquals(want, assertThrows(TraceFormatException.class, () -> TraceFiles.exportNpy(t, 0, p)).getMessage());
    assertFalse(Files.exists(p));
  }

  @Test
  void npyImportsInferEDefaultLayersAndEmptySamples() {
    Npy.Array a = new Npy.Array(Npy.Dtype.I8, new long[] {3, 2, 2}, new long[] {0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0});
    RoutingTrace t = TraceFiles.fromNpy(a, null, 0, null, null, new long[] {0, 2, 2, 3});
    assertEquals(2, t.experts()); // k = 2 and no index above 1
    assertArrayEquals(new int[] {0, 1}, t.layerIds());
    assertEquals(3, t.samples());
    assertEquals(0, t.sampleTokens(1));
    assertEquals("", t.model());

    Npy.Array k1 = new Npy.Array(Npy.Dtype.I4, new long[] {2, 1}, new int[] {0, 3});
    RoutingTrace one = TraceFiles.fromNpy(k1, "m", 0, new int[] {5}, "s", null);
    assertEquals(1, one.topK());
    assertEquals(4, one.experts());
    assertArrayEquals(new int[] {0, 3}, one.sample(0));

    Npy.Array none = new Npy.Array(Npy.Dtype.I4, new long[] {0, 1, 2}, new int[0]);
    assertEquals(0, TraceFiles.fromNpy(none, "m", 4, null, "s", new long[] {0}).samples());

    MoeRouterException e = assertThrows(MoeRouterException.class, () -> TraceFiles.fromNpy(a, "m", 4, new int[] {1, 2, 3}, "s", null));
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertEquals("3 layer ids given for 2 layers in the .npy", e.getMessage());
    assertEquals("sample offsets decrease at 2",
        assertThrows(MoeRouterException.class, () -> TraceFiles.fromNpy(a, "m", 4, null, "s", new long[] {0, 2, 1, 3})).getMessage());
  }
}
