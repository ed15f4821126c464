// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.moerouter.TestData;
import org.moerouter.replay.LayerKey;

class TraceFilesTest {
  @TempDir Path dir;

  @ParameterizedTest
  @CsvSource({"8, 2, U8", "256, 8, U8", "257, 8, U16", "4096, 16, U16", "65536, 4, U16"})
  void roundTripKeepsEverything(int experts, int k, String dtype) throws Exception {
    RoutingTrace t = TraceTestSupport.random(experts, experts, k, new int[] {1, 3, 5}, new int[] {7, 0, 13, 1});
    assertEquals(dtype, t.indexDtype());
    Path p = dir.resolve("t.safetensors");
    TraceFiles.write(t, p);
    RoutingTrace r = TraceFiles.read(p);
    assertTrue(r.isMapped());
    assertEquals(p, r.path());
    assertTrue(r.contentEquals(t));
    assertEquals("test-model", r.model());
    assertEquals(experts, r.experts());
    assertEquals(k, r.topK());
    assertArrayEquals(new int[] {1, 3, 5}, r.layerIds());
    assertEquals("softmax", r.scoreFunction());
    assertArrayEquals(new long[] {0, 7, 7, 20, 21}, r.sampleOffsets());
    assertEquals(dtype, r.indexDtype());
    for (int s = 0; s < t.samples(); s++) assertArrayEquals(t.sample(s), r.sample(s));
    // Expected file size: header + offsets + indices.
    byte[] bytes = Files.readAllBytes(p);
    long n = TraceTestSupport.headerLength(bytes);
    assertEquals(0, (8 + n) % 8, "header padded to 8 bytes");
    assertEquals(8 + n + 5 * 8 + 21L * 3 * k * (dtype.equals("U8") ? 1 : 2), bytes.length);
  }

  @Test
  void writeIsDeterministicAndRereadIdentical() throws Exception {
    RoutingTrace t = TraceTestSupport.random(1, 64, 4, new int[] {0, 1}, new int[] {5, 9});
    Path a = dir.resolve("a.safetensors"), b = dir.resolve("b.safetensors");
    TraceFiles.write(t, a);
    TraceFiles.write(TraceFiles.read(a), b);
    assertArrayEquals(Files.readAllBytes(a), Files.readAllBytes(b));
  }

  @Test
  void mappedRandomAccessBySampleAndLayerRange() throws Exception {
    int[] lens = new int[200];
    Random r = new Random(3);
    for (int i = 0; i < lens.length; i++) lens[i] = r.nextInt(50);
    int[] layers = {2, 4, 6, 8, 10, 12};
    RoutingTrace t = TraceTestSupport.random(9, 128, 6, layers, lens);
    Path p = dir.resolve("big.safetensors");
    TraceFiles.write(t, p);
    RoutingTrace m = TraceFiles.open(p);
    for (int trial = 0; trial < 300; trial++) {
      int s = r.nextInt(lens.length);
      int lf = r.nextInt(layers.length), lt = lf + 1 + r.nextInt(layers.length - lf);
      int[] got = new int[lens[s] * (lt - lf) * 6 + 3];
      int n = m.copySample(s, lf, lt, got, 3);
      assertEquals(lens[s] * (lt - lf) * 6, n);
      int[] full = t.sample(s);
      for (int tok = 0; tok < lens[s]; tok++)
        for (int l = lf; l < lt; l++)
          for (int j = 0; j < 6; j++) {
            int want = full[(tok * layers.length + l) * 6 + j];
            assertEquals(want, got[3 + (tok * (lt - lf) + (l - lf)) * 6 + j]);
            if (j == 0) assertEquals(want, m.expert(s, tok, l, j));
          }
    }
    // Global token ranges across sample boundaries and views.
    int[] a = new int[100 * 2 * 6], b = new int[100 * 2 * 6];
    m.copyTokens(1000, 1100, 1, 3, a, 0);
    t.copyTokens(1000, 1100, 1, 3, b, 0);
    assertArrayEquals(b, a);
    RoutingTrace view = m.slice(50, 60);
    assertEquals(10, view.samples());
    assertArrayEquals(t.sample(55), view.sample(5));
    Path v = dir.resolve("view.safetensors");
    TraceFiles.write(view, v);
    assertTrue(TraceFiles.read(v).contentEquals(t.slice(50, 60)));
    assertEquals(4, m.layerIndex(10));
    assertEquals(-1, m.layerIndex(3));
  }

  @Test
  void emptyTraceAndEmptySamples() throws Exception {
    RoutingTrace t = RoutingTrace.builder("m", 16, 2, new int[] {0}, "sigmoid").build();
    Path p = dir.resolve("empty.safetensors");
    TraceFiles.write(t, p);
    RoutingTrace r = TraceFiles.read(p);
    assertEquals(0, r.samples());
    assertEquals(0, r.totalTokens());
    RoutingTrace t2 = RoutingTrace.builder("m", 16, 2, new int[] {0}, "sigmoid").addSample(new int[0]).addSample(new int[] {3, 4}).build();
    TraceFiles.write(t2, p);
    RoutingTrace r2 = TraceFiles.read(p);
    assertEquals(0, r2.sampleTokens(0));
    assertEquals(4, r2.expert(1, 0, 0, 1));
  }

  @Test
  void builderRejectsBadIndicesNamingThePosition() {
    RoutingTrace.Builder b = RoutingTrace.builder("m", 8, 2, new int[] {4, 9}, "softmax");
    var e = assertThrows(org.moerouter.MoeRouterException.class, () -> b.addSample(new int[] {0, 1, 2, 3, 5, 5, 6, 7}));
    assertEquals("sample 0 token 1 layer 4: expert 5 appears twice in the top-2 set", e.getMessage());
    e = assertThrows(org.moerouter.MoeRouterException.class, () -> b.addSample(new int[] {0, 1, 2, 8}));
    assertEquals("sample 0 token 0 layer 9: expert 8 out of range [0, 8)", e.getMessage());
    assertThrows(org.moerouter.MoeRouterException.class, () -> b.addSample(new int[] {0, 1, 2}));
    assertEquals(0, b.samples());
  }

  @Test
  void npyExportImportRoundTrip() throws Exception {
    RoutingTrace t = TraceTestSupport.random(5, 300, 8, new int[] {0, 1, 2}, new int[] {11, 4});
    Path npy = dir.resolve("t.npy");
    TraceFiles.exportNpy(t, npy);
    Npy.Array a = Npy.read(npy);
    assertEquals(Npy.Dtype.I4, a.dtype());
    assertArrayEquals(new long[] {15, 3, 8}, a.shape());
    RoutingTrace back = TraceFiles.fromNpy(a, "test-model", 300, new int[] {0, 1, 2}, "softmax", new long[] {0, 11, 15});
    assertTrue(back.contentEquals(t));
    TraceFiles.exportNpy(t, 1, npy);
    assertArrayEquals(t.sample(1), Npy.read(npy).toIntArray());
    // Inferred E, 2-D [tokens, k] as one layer, uint16 input.
    Npy.Array two = new Npy.Array(Npy.Dtype.U2, new long[] {2, 2}, new short[] {(short) 40000, 1, 2, 3});
    RoutingTrace inferred = TraceFiles.fromNpy(two, null, 0, null, null, null);
    assertEquals(40001, inferred.experts());
    assertEquals(1, inferred.layers());
    assertEquals(40000, inferred.expert(0, 0, 0, 0));
  }

  @Test
  void metadataOfFile() throws Exception {
    RoutingTrace t = TraceTestSupport.random(5, 64, 2, new int[] {7}, new int[] {3});
    Path p = dir.resolve("m.safetensors");
    TraceFiles.write(t, p);
    Map<String, String> m = TraceFiles.metadata(p);
    assertEquals("moe-router-trace", m.get("format"));
    assertEquals("1", m.get("format_version"));
    assertEquals("64", m.get("experts"));
    assertEquals("2", m.get("top_k"));
    assertEquals("[7]", m.get("layer_ids"));
    assertTrue(m.get("checksum").matches("crc32:[0-9a-f]{8}"));
  }

  /** numpy reads the tensors from the safetensors layout directly (no safetensors package needed). */
  @Test
  void numpyReadsTheFile() throws Exception {
    Assumptions.assumeTrue(pythonWithNumpy(), "python3 with numpy not available");
    RoutingTrace t = TraceTestSupport.random(11, 300, 4, new int[] {1, 2}, new int[] {3, 5});
    Path p = dir.resolve("py.safetensors");
    TraceFiles.write(t, p);
    String script = String.join("\n",
        "import json, struct, sys, zlib, numpy as np",
        "raw = open(sys.argv[1], 'rb').read()",
        "n = struct.unpack('<Q', raw[:8])[0]",
        "h = json.loads(raw[8:8 + n])",
        "data = raw[8 + n:]",
        "def tensor(name, dt):",
        "    i = h[name]; b, e = i['data_offsets']",
        "    return np.frombuffer(data[b:e], dtype=dt).reshape(i['shape'])",
        "idx = tensor('indices', {'U8': '<u1', 'U16': '<u2'}[h['indices']['dtype']])",
        "off = tensor('sample_offsets', '<i8')",
        "meta = h['__metadata__']",
        "canon = ''.join(f'{k}={v}\\n' for k, v in sorted(meta.items()) if k != 'checksum').encode()",
        "assert meta['checksum'] == 'crc32:%08x' % zlib.crc32(data + canon), 'checksum'",
        "print(idx.shape, off.tolist(), idx[3:8, 1, :].tolist(), json.loads(meta['layer_ids']))");
    Path py = dir.resolve("check.py");
    Files.writeString(py, script);
    Process proc = new ProcessBuilder("python3", py.toString(), p.toString()).redirectErrorStream(true).start();
    String out = new String(proc.getInputStream().readAllBytes()).trim();
    assertTrue(proc.waitFor(60, TimeUnit.SECONDS));
    assertEquals(0, proc.exitValue(), out);
    int[] s1 = t.sample(1);
    StringBuilder want = new StringBuilder("(8, 2, 4) [0, 3, 8] [");
    for (int tok = 0; tok < 5; tok++) {
      want.append(tok == 0 ? "[" : ", [");
      for (int j = 0; j < 4; j++) want.append(j == 0 ? "" : ", ").append(s1[(tok * 2 + 1) * 4 + j]);
      want.append(']');
    }
    want.append("] [1, 2]");
    assertEquals(want.toString(), out);
  }

  static boolean pythonWithNumpy() {
    try {
      Process p = new ProcessBuilder("python3", "-c", "import numpy").redirectErrorStream(true).start();
      p.getInputStream().readAllBytes();
      return p.waitFor(30, TimeUnit.SECONDS) && p.exitValue() == 0;
    } catch (Exception e) {
      return false;
    }
  }

  @Test
  void headerIsLittleEndianSafetensors() throws Exception {
    RoutingTrace t = TraceTestSupport.random(2, 16, 2, new int[] {0}, new int[] {1});
    Path p = dir.resolve("h.safetensors");
    TraceFiles.write(t, p);
    byte[] bytes = Files.readAllBytes(p);
    long n = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).getLong();
    String header = new String(bytes, 8, (int) n, java.nio.charset.StandardCharsets.UTF_8);
    assertTrue(header.startsWith("{\"__metadata__\":{"), header);
    assertTrue(header.contains("\"sample_offsets\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}"), header);
    assertTrue(header.contains("\"indices\":{\"dtype\":\"U8\",\"shape\":[1,1,2],\"data_offsets\":[16,18]}"), header);
  }

  @Test
  void maskAndMtpLayersRoundTripAsVersionTwo() throws Exception {
    LayerKey[] keys = {LayerKey.decoder(1), LayerKey.decoder(3), LayerKey.mtp(1)};
    RoutingTrace.Builder b = RoutingTrace.builder("m", 32, 2, keys, "sigmoid");
    int[] s0 = TestData.randomSelection(new Random(1), 4 * 3, 2, 32);
    s0[3 * 6] = -1; // token 3 is padding: any content, stored as 0..k-1
    s0[3 * 6 + 1] = -1;
    b.addSample(s0, new byte[] {1, 1, 1, 0});
    b.addSample(TestData.randomSelection(new Random(2), 2 * 3, 2, 32), null);
    RoutingTrace t = b.build();
    assertTrue(t.hasMask());
    assertEquals(1, t.maskedTokens());
    assertEquals(1, t.mtpLayers());
    assertEquals(LayerKey.mtp(1), t.layerKey(2));
    assertEquals(0, t.layerIndex(LayerKey.decoder(1)));
    assertEquals(2, t.layerIndex(LayerKey.mtp(1)));
    assertFalse(t.recorded(0, 3));
    assertEquals(1, t.expert(0, 3, 0, 1), "masked rows hold 0..k-1");
    Path p = dir.resolve("v2.safetensors");
    TraceFiles.write(t, p);
    Map<String, String> meta = TraceFiles.metadata(p);
    assertEquals("2", meta.get("format_version"));
    assertEquals("[1,3]", meta.get("layer_ids"));
    assertEquals("[1]", meta.get("mtp_layer_ids"));
    RoutingTrace r = TraceFiles.read(p);
    assertTrue(r.contentEquals(t));
    assertArrayEquals(new byte[] {1, 1, 1, 0}, r.sampleMask(0));
    assertArrayEquals(new byte[] {1, 1}, r.sampleMask(1));
    assertArrayEquals(keys, r.layerKeys());
    RoutingTrace view = r.slice(1, 2);
    assertFalse(view.hasMask() && view.maskedTokens() != 0);
    assertTrue(TraceFiles.read(write(view, "view.safetensors")).contentEquals(t.slice(1, 2)));
    // A flipped mask byte is covered by the checksum.
    byte[] bytes = Files.readAllBytes(p);
    bytes[bytes.length - 1] = 0;
    Files.write(p, bytes);
    assertTrue(assertThrows(TraceFormatException.class, () -> TraceFiles.read(p)).getMessage().contains("checksum mismatch"));
  }

  private Path write(RoutingTrace t, String name) throws Exception {
    Path p = dir.resolve(name);
    TraceFiles.write(t, p);
    return p;
  }

  /** What Python's safetensors writes: no checksum, tensors in its own order, a BOOL mask. */
  @Test
  void aTraceWrittenByPythonWithoutAChecksumIsReadAndOneWithAChecksumMustMatch() throws Exception {
    RoutingTrace t = TraceTestSupport.random(3, 64, 2, new int[] {0, 2}, new int[] {3, 2});
    byte[] good = Files.readAllBytes(write(t, "ours.safetensors"));
    String h = TraceTestSupport.headerText(good);
    String noSum = h.replaceAll(",\"checksum\":\"crc32:[0-9a-f]{8}\"", "");
    assertNotEquals(h, noSum);
    Path p = dir.resolve("python.safetensors");
    Files.write(p, TraceTestSupport.rewriteHeader(good, x -> noSum));
    RoutingTrace r = TraceFiles.read(p);
    assertTrue(r.contentEquals(t));
    assertFalse(r.source.hasChecksum());
    // Data order [indices][sample_offsets][mask BOOL], as safetensors may lay them out.
    int ds = TraceTestSupport.dataStart(good);
    byte[] offs = java.util.Arrays.copyOfRange(good, ds, ds + 24), idx = java.util.Arrays.copyOfRange(good, ds + 24, good.length);
    String hdr = "{\"indices\":{\"dtype\":\"U8\",\"shape\":[5,2,2],\"data_offsets\":[0,20]},\"mask\":{\"dtype\":\"BOOL\","
        + "\"shape\":[5],\"data_offsets\":[44,49]},\"sample_offsets\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[20,44]},"
        + "\"__metadata__\":{\"format\":\"moe-router-trace\",\"format_version\":\"2\",\"model\":\"py\",\"experts\":\"64\","
        + "\"top_k\":\"2\",\"layer_ids\":\"[0, 2]\",\"score_function\":\"softmax\"}}";
    byte[] json = hdr.getBytes(java.nio.charset.StandardCharsets.UTF_8);
    ByteBuffer f = ByteBuffer.allocate(8 + json.length + 49).order(ByteOrder.LITTLE_ENDIAN);
    f.putLong(json.length).put(json).put(idx).put(offs).put(new byte[] {1, 1, 0, 1, 1});
    Files.write(p, f.array());
    RoutingTrace py = TraceFiles.read(p);
    assertEquals("py", py.model());
    assertArrayEquals(new byte[] {1, 1, 0}, py.sampleMask(0));
    assertArrayEquals(t.sample(1), py.sample(1));
  }

  @Test
  void unrecordedRowsAreLeftOutOfAgreementAndOutOfPlainNpy() throws Exception {
    RoutingTrace a = RoutingTrace.builder("m", 8, 2, new int[] {0}, "").addSample(new int[] {1, 2, 3, 4, 5, 6}, new byte[] {1, 0, 1}).build();
    RoutingTrace b = RoutingTrace.builder("m", 8, 2, new int[] {0}, "").addSample(new int[] {1, 2, 7, 6, 5, 6}).build();
    org.moerouter.RoutingAgreement.Result r = TraceMetrics.agreement(a, b);
    assertEquals(2, r.tokens(), "the unrecorded token is not compared");
    assertEquals(0, r.differingRows());
    TraceFormatException e = assertThrows(TraceFormatException.class, () -> TraceFiles.exportNpy(a, dir.resolve("a.npy")));
    assertTrue(e.getMessage().startsWith("the trace has 1 unrecorded (mask 0) tokens and a plain .npy has no mask"), e.getMessage());
    assertFalse(Files.exists(dir.resolve("a.npy")));
  }
}
