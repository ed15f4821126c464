// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.MoeRouterException;
import org.moerouter.RoutingAgreement;
import org.moerouter.Status;
import org.moerouter.TestData;
import org.moerouter.replay.LayerKey;
import org.moerouter.trace.TraceInterop.ExportOptions;
import org.moerouter.trace.TraceInterop.ImportOptions;
import org.moerouter.trace.TraceInterop.Layout;
import org.moerouter.trace.TraceInterop.MaskedRows;

/**
 * Conversions, packing and metrics at the limits PIT found untested (docs/testing.md, "org.moerouter.trace after
 * the trace survivor tests"): float arrays refused by every importer, Megatron offsets with empty samples and
 * MTP-only columns, E inferred from a later row, k = 1 rows of zeros, file and archive order, every masked-rows
 * policy of the exports with the row and sample named, what {@link TraceInterop#write} reports, packing segments
 * at their limits, and agreement over masked traces in several chunks.
 */
class TraceInteropPitSurvivorsTest {
  @TempDir Path dir;

  static Npy.Array i8(long[] shape, long... v) {
    return new Npy.Array(Npy.Dtype.I8, shape, v);
  }

  static Npy.Array i4(long[] shape, int... v) {
    return new Npy.Array(Npy.Dtype.I4, shape, v);
  }

  // ------------------------------------------------------------------ import

  @Test
  void floatArraysAreRefusedByEveryImporter() {
    Npy.Array f = new Npy.Array(Npy.Dtype.F4, new long[] {1, 1, 1, 2}, new float[] {0, 1});
    Npy.Array mask = i8(new long[] {1, 1}, 1);
    assertEquals("verl routed_experts: routing indices must be integers (int32, int64, uint8, uint16), got <f4",
        assertThrows(TraceFormatException.class, () -> TraceInterop.fromVerl(f, mask, new ImportOptions())).getMessage());
    Npy.Array g = new Npy.Array(Npy.Dtype.F8, new long[] {1, 1, 2}, new double[] {0, 1});
    assertEquals("Megatron indices: routing indices must be integers (int32, int64, uint8, uint16), got <f8",
        assertThrows(TraceFormatException.class, () -> TraceInterop.fromMegatron(g, new ImportOptions())).getMessage());
  }

  @Test
  void megatronOffsetsEmptySamplesMtpOnlyColumnsAndInferredE() {
    Npy.Array none = i8(new long[] {0, 1, 2});
    RoutingTrace empty = TraceInterop.fromMegatron(none, new ImportOptions().experts(4).sampleOffsets(0)).trace();
    assertEquals(0, empty.samples());

    Npy.Array two = i8(new long[] {2, 1, 2}, 0, 1, 5, 2);
    TraceInterop.Imported in = TraceInterop.fromMegatron(two, new ImportOptions().sampleOffsets(0, 1, 1, 2));
    assertEquals(3, in.trace().samples());
    assertEquals(0, in.trace().sampleTokens(1));
    assertArrayEquals(new int[] {5, 2}, in.trace().sample(2));
    assertEquals(6, in.trace().experts()); // the largest index is in the second row
    assertEquals(List.of("megatron: --experts not given; inferred E = 6 (max index + 1)"), in.notes());

    assertEquals(6, TraceInterop.fromMegatron(two, new ImportOptions()).trace().experts()); // one sample, E from its row 1

    RoutingTrace mtp = TraceInterop.fromMegatron(i8(new long[] {1, 1, 2}, 0, 1), new ImportOptions().experts(2).mtpLayerIds(0)).trace();
    assertEquals(1, mtp.mtpLayers());
    assertArrayEquals(new LayerKey[] {LayerKey.mtp(0)}, mtp.layerKeys());

    TraceFormatException e = assertThrows(TraceFormatException.class,
        () -> TraceInterop.fromMegatron(i8(new long[] {1, 1, 2}, 65536, 0), new ImportOptions().experts(65536)));
    assertEquals("megatron sample 0: token 0 layer 0: expert 65536 out of range [0, 65536)", e.getMessage());
    e = assertThrows(TraceFormatException.class,
        () -> TraceInterop.fromMegatron(i8(new long[] {1, 1, 2}, 0, 65537), new ImportOptions().experts(65536)));
    assertEquals("Megatron indices: element 1 is 65537, not an expert index (or -1 padding)", e.getMessage());
  }

  @Test
  void kOneRowsOfZerosAreRoutingAndSlimeAcceptsAnEmptyMtpList() {
    Npy.Array experts = i4(new long[] {1, 2, 1, 1}, 0, 3);
    RoutingTrace v = TraceInterop.fromVerl(experts, i8(new long[] {1, 2}, 1, 1), new ImportOptions().experts(4)).trace();
    assertFalse(v.hasMask()); // with k = 1, expert 0 is a whole row, not an unfilled one
    assertArrayEquals(new int[] {0, 3}, v.sample(0));

    RoutingTrace s = TraceInterop.fromSlime(List.of(i4(new long[] {2, 1, 2}, 0, 1, 2, 3)),
        new ImportOptions().experts(4).mtpLayerIds(new int[0])).trace();
    assertEquals(3, s.totalTokens());
  }

  @Test
  void slimeAndMilesReadTheSameFileUnderTheirOwnPadding() throws Exception {
    Path p = dir.resolve("pad.npy");
    Npy.write(p, i4(new long[] {2, 1, 2}, 0, 1, -1, -1));
    TraceFormatException e = assertThrows(TraceFormatException.class,
        () -> TraceInterop.read(Layout.SLIME, p, null, new ImportOptions().experts(4)));
    assertTrue(e.getMessage().startsWith(p + ": slime sample 0 row 1 is all -1 (padding), rejected"), e.getMessage());
    RoutingTrace m = TraceInterop.read(Layout.MILES, p, null, new ImportOptions().experts(4)).trace();
    assertArrayEquals(new byte[] {1, 0, 0}, m.sampleMask(0));
  }

  @Test
  void filesAreReadInNaturalNameOrder() throws Exception {
    Path d = dir.resolve("d");
    Files.createDirectories(d);
    Npy.write(d.resolve("arr_10.npy"), i4(new long[] {3, 1, 1}, 0, 1, 2));
    Npy.write(d.resolve("arr_2.npy"), i4(new long[] {1, 1, 1}, 3));
    Files.writeString(d.resolve("notes.txt"), "not an array");
    RoutingTrace t = TraceInterop.read(Layout.SLIME, d, null, new ImportOptions().experts(4)).trace();
    assertEquals(2, t.samples());
    assertEquals(2, t.sampleTokens(0));
    assertEquals(4, t.sampleTokens(1));

    Map<String, Npy.Array> named = new LinkedHashMap<>();
    named.put("arr_10", i4(new long[] {3, 1, 1}, 0, 1, 2));
    named.put("arr_2", i4(new long[] {1, 1, 1}, 3));
    named.put("arr_1", i4(new long[] {2, 1, 1}, 1, 2));
    Path s = dir.resolve("s.safetensors");
    Safetensors.write(s, null, named);
    RoutingTrace u = TraceInterop.read(Layout.SLIME, s, null, new ImportOptions().experts(4)).trace();
    assertArrayEquals(new long[] {0, 3, 5, 9}, u.sampleOffsets());

    assertTrue(TraceInterop.naturalCompare("arr_2", "arr_10") < 0);
    assertTrue(TraceInterop.naturalCompare("arr_10", "arr_2") > 0);
    assertTrue(TraceInterop.naturalCompare("a", "ab") < 0);
    assertTrue(TraceInterop.naturalCompare("ab", "a") > 0);
    assertEquals(0, TraceInterop.naturalCompare("x007", "x7"));
    assertTrue(TraceInterop.naturalCompare("x7y", "x07z") < 0);
  }

  @Test
  void layoutAndPolicyNames() {
    assertEquals(Layout.SLIME, Layout.parse("SLIME"));
    assertEquals(Layout.MEGATRON, Layout.parse("Megatron"));
    assertEquals("unknown layout 'x' (slime, miles, verl, megatron)",
        assertThrows(MoeRouterException.class, () -> Layout.parse("x")).getMessage());
    assertEquals("minus-one", MaskedRows.MINUS_ONE.label());
    assertEquals(MaskedRows.MINUS_ONE, MaskedRows.parse("MINUS-ONE"));
    assertEquals(MaskedRows.ZEROS, MaskedRows.parse("zeros"));
    MoeRouterException e = assertThrows(MoeRouterException.class, () -> MaskedRows.parse("minus_one"));
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertEquals("unknown masked-rows policy 'minus_one' (error, minus-one, arange, zeros)", e.getMessage());
  }

  // ------------------------------------------------------------------ export

  /** Layers 1 and 3, E = 6, k = 2; samples of 2, 0 and 2 tokens; global token 2 (sample 2 token 0) unrecorded. */
  static RoutingTrace withEmptySample() {
    return RoutingTrace.builder("m", 6, 2, new int[] {1, 3}, "softmax")
        .addSample(new int[] {0, 1, 2, 3, 4, 5, 0, 2})
        .addSample(new int[0])
        .addSample(new int[] {5, 5, 5, 5, 1, 3, 5, 4}, new byte[] {0, 1}).build();
  }

  @Test
  void megatronExportsEveryMaskedRowsPolicy() {
    RoutingTrace t = withEmptySample();
    assertArrayEquals(new long[] {0, 1, 2, 3, 4, 5, 0, 2, -1, -1, -1, -1, 1, 3, 5, 4},
        (long[]) TraceInterop.toMegatron(t, new ExportOptions().maskedRows(MaskedRows.MINUS_ONE)).data());
    assertArrayEquals(new long[] {0, 1, 2, 3, 4, 5, 0, 2, 0, 0, 0, 0, 1, 3, 5, 4},
        (long[]) TraceInterop.toMegatron(t, new ExportOptions().maskedRows(MaskedRows.ZEROS)).data());
    assertArrayEquals(new long[] {0, 1, 2, 3, 4, 5, 0, 2, 0, 1, 0, 1, 1, 3, 5, 4},
        (long[]) TraceInterop.toMegatron(t, new ExportOptions().maskedRows(MaskedRows.ARANGE)).data());
    String tail = " was not recorded (mask 0); to write it anyway choose --masked-rows minus-one, arange or zeros (MaskedRows)";
    assertEquals("megatron has no per-token mask: sample 2 token 0" + tail,
        assertThrows(TraceFormatException.class, () -> TraceInterop.toMegatron(t, new ExportOptions())).getMessage());
    RoutingTrace first = RoutingTrace.builder("m", 6, 2, new int[] {1}, "s").addSample(new int[] {0, 1, 2, 3}, new byte[] {0, 1}).build();
    assertEquals("megatron has no per-token mask: sample 0 token 0" + tail,
        assertThrows(TraceFormatException.class, () -> TraceInterop.toMegatron(first, new ExportOptions())).getMessage());
    RoutingTrace inside = RoutingTrace.builder("m", 6, 2, new int[] {1}, "s").addSample(new int[] {0, 1, 2, 3})
        .addSample(new int[] {0, 1, 2, 3, 4, 5}, new byte[] {1, 0, 1}).build();
    assertEquals("megatron has no per-token mask: sample 1 token 1" + tail,
        assertThrows(TraceFormatException.class, () -> TraceInterop.toMegatron(inside, new ExportOptions())).getMessage());
  }

  @Test
  void slimeExportWritesArangeInTheMoeColumnsOnly() {
    RoutingTrace t = RoutingTrace.builder("m", 6, 2, new int[] {1, 3}, "softmax")
        .addSample(new int[] {4, 5, 2, 3, 5, 5, 5, 5, 1, 2, 3, 4}, new byte[] {1, 0, 1}).build();
    List<Npy.Array> a = TraceInterop.toSlime(t, new ExportOptions().maskedRows(MaskedRows.ARANGE).numLayers(5));
    assertEquals(1, a.size());
    assertArrayEquals(new long[] {2, 5, 2}, a.get(0).shape());
    assertArrayEquals(new int[] {0, 0, 4, 5, 0, 0, 2, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0}, (int[]) a.get(0).data());
    assertEquals(4, TraceInterop.toSlime(t, new ExportOptions().numLayers(4).maskedRows(MaskedRows.ZEROS)).get(0).dim(1));
    MoeRouterException e = assertThrows(MoeRouterException.class, () -> TraceInterop.toSlime(t, new ExportOptions().numLayers(3)));
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertEquals("slime: layer id 3 needs at least 4 columns, --num-layers is 3", e.getMessage());
  }

  @Test
  void writeReportsWhatTheFileHolds() throws Exception {
    RoutingTrace t = RoutingTrace.builder("m", 6, 2, new int[] {1, 3}, "softmax")
        .addSample(new int[] {4, 5, 2, 3, 0, 1, 2, 3}).addSample(new int[] {1, 2, 3, 4, 0, 5, 1, 0, 2, 3, 4, 5}).build();
    assertEquals("2 int32 arrays [len(tokens) - 1, 4, 2]", TraceInterop.write(Layout.SLIME, t, dir.resolve("s.npz"), null));
    assertEquals("2 int32 arrays [len(tokens) - 1, 6, 2]",
        TraceInterop.write(Layout.MILES, t, dir.resolve("m.npz"), new ExportOptions().numLayers(6)));
    assertEquals("routed_experts int32 [2, 3, 4, 2], attention_mask int64 [2, 3]",
        TraceInterop.write(Layout.VERL, t, dir.resolve("v.npz"), null));
    Path meg = dir.resolve("g.safetensors");
    assertEquals("int64 [5, 2, 2]", TraceInterop.write(Layout.MEGATRON, t, meg, null));
    Map<String, String> meta = Safetensors.readHeader(meg).metadata();
    assertEquals("[1,3]", meta.get("layer_ids"));
    assertFalse(meta.containsKey("mtp_layer_ids"));

    // slime and miles differ in their default for unrecorded rows: an error, or -1
    RoutingTrace masked = RoutingTrace.builder("m", 6, 2, new int[] {0}, "softmax")
        .addSample(new int[] {0, 1, 2, 3, 4, 5}, new byte[] {1, 0, 1}).build();
    Path mi = dir.resolve("masked.npz");
    assertEquals("1 int32 arrays [len(tokens) - 1, 1, 2]", TraceInterop.write(Layout.MILES, masked, mi, null));
    assertArrayEquals(new int[] {0, 1, -1, -1}, (int[]) Npy.readNpz(mi).get("arr_0").data());
    Path sl = dir.resolve("masked-slime.npz");
    assertTrue(assertThrows(TraceFormatException.class, () -> TraceInterop.write(Layout.SLIME, masked, sl, null)).getMessage()
        .startsWith("slime has no per-token mask: sample 0 token 1 was not recorded"));
    assertFalse(Files.exists(sl));

    RoutingTrace none = RoutingTrace.builder("m", 6, 2, new int[] {1, 3}, "softmax").build();
    Path z = dir.resolve("zero.npz");
    assertEquals("0 int32 arrays [len(tokens) - 1, 4, 2]", TraceInterop.write(Layout.SLIME, none, z, null));
    assertTrue(Files.exists(z));

    RoutingTrace mtp = RoutingTrace.builder("m", 6, 2, new LayerKey[] {LayerKey.decoder(1), LayerKey.mtp(0)}, "s")
        .addSample(new int[] {0, 1, 2, 3}).build();
    Path q = dir.resolve("mtp.safetensors");
    TraceInterop.write(Layout.MEGATRON, mtp, q, null);
    assertEquals("[0]", Safetensors.readHeader(q).metadata().get("mtp_layer_ids"));
  }

  // ------------------------------------------------------------------ slicing

  @Test
  void packingSegmentsAtTheirLimits() {
    RoutingTrace t = RoutingTracePitSurvivorsTest.small(); // samples of 2, 0 and 3 tokens, layers 3 and 7
    TraceSlicing.Packed p = TraceSlicing.pack(t, new int[] {1, 0, 2}, new int[] {0, 0, 3, 6}, 0, 2);
    assertEquals(6, p.tokens());
    assertEquals(2, p.topK());
    assertArrayEquals(new long[] {6, 2, 2}, p.shape());
    assertArrayEquals(new LayerKey[] {LayerKey.decoder(3), LayerKey.decoder(7)}, p.layerKeys());
    assertArrayEquals(new byte[] {1, 1, 0, 1, 1, 1}, p.mask());
    assertArrayEquals(new int[] {0, 1, 1, 2, 0, 1, 2, 3, 3, 4, 4, 0}, p.layer(0));
    assertArrayEquals(new int[] {1, 2, 2, 3, 0, 1, 3, 4, 4, 0, 0, 1}, p.layer(1));
    assertEquals("layer position 2 outside [0, 2)", assertThrows(MoeRouterException.class, () -> p.layer(2)).getMessage());
    assertEquals("layer position -1 outside [0, 2)", assertThrows(MoeRouterException.class, () -> p.layer(-1)).getMessage());

    assertEquals("sample 2 has 3 tokens, its packed segment 1 [2, 4) holds 2",
        assertThrows(MoeRouterException.class, () -> TraceSlicing.pack(t, new int[] {0, 2}, new int[] {0, 2, 4}, 0, 2)).getMessage());
    assertEquals("cu_seqlens decreases at 2",
        assertThrows(MoeRouterException.class, () -> TraceSlicing.pack(t, new int[] {0, 1}, new int[] {0, 2, 1}, 0, 2)).getMessage());
    assertEquals("layer range [1, 3) outside [0, 2)",
        assertThrows(MoeRouterException.class, () -> TraceSlicing.pack(t, new int[] {0}, new int[] {0, 2}, 1, 3)).getMessage());
    assertEquals("layer range [1, 1) outside [0, 2)",
        assertThrows(MoeRouterException.class, () -> TraceSlicing.pack(t, new int[] {0}, new int[] {0, 2}, 1, 1)).getMessage());
    assertEquals(1, TraceSlicing.pack(t, new int[] {0}, new int[] {0, 2}, 1, 2).layers());

    int[] rows = {9, 9, 9, 9, 9, 9, 9, 9};
    TraceSlicing.padRows(rows, 1, 3, 2);
    assertArrayEquals(new int[] {9, 9, 0, 1, 0, 1, 9, 9}, rows);
  }

  @Test
  void microBatchesAtOneAndAtTheSampleCount() {
    RoutingTrace t = RoutingTracePitSurvivorsTest.small(); // 2, 0 and 3 tokens
    assertArrayEquals(new int[][] {{0}, {1}, {2}}, TraceSlicing.microBatches(t, 1));
    assertArrayEquals(new int[][] {{0, 1, 2}}, TraceSlicing.microBatches(t, 3));
    assertEquals("samples per micro-batch must be >= 1, got 0",
        assertThrows(MoeRouterException.class, () -> TraceSlicing.microBatches(t, 0)).getMessage());
    RoutingTrace ones = RoutingTrace.builder("m", 2, 1, new int[] {0}, "s").addSample(new int[] {0}).addSample(new int[] {1}).build();
    assertArrayEquals(new int[][] {{0}, {1}}, TraceSlicing.microBatchesByTokens(ones, 1));
    assertEquals("max tokens per micro-batch must be >= 1, got 0",
        assertThrows(MoeRouterException.class, () -> TraceSlicing.microBatchesByTokens(ones, 0)).getMessage());
  }

  // ------------------------------------------------------------------ metrics

  /** 32 layers, k = 8 (rows of 256 indices, so 4096 tokens per chunk), E = 16, random masks when asked. */
  static RoutingTrace masked(long seed, int tokens, boolean mask) {
    Random r = new Random(seed);
    int[] ids = new int[32];
    for (int i = 0; i < 32; i++) ids[i] = i;
    byte[] m = new byte[tokens];
    for (int i = 0; i < tokens; i++) m[i] = (byte) (!mask || r.nextInt(5) > 0 ? 1 : 0);
    return RoutingTrace.builder("m", 16, 8, ids, "softmax").addSample(TestData.randomSelection(r, tokens * 32, 8, 16), m).build();
  }

  /** The counts over the rows both traces recorded, from the whole arrays at once. */
  static RoutingAgreement.Result expected(RoutingTrace a, RoutingTrace b) {
    int n = (int) a.totalTokens(), w = 256;
    int[] x = a.sample(0), y = b.sample(0);
    byte[] ma = a.sampleMask(0), mb = b.sampleMask(0);
    int kept = 0;
    for (int r = 0; r < n; r++) {
      if (ma[r] == 0 || mb[r] == 0) continue;
      System.arraycopy(x, r * w, x, kept * w, w);
      System.arraycopy(y, r * w, y, kept * w, w);
      kept++;
    }
    return RoutingAgreement.compare(x, y, kept, 32, 8, 16, RoutingAgreement.Engine.JAVA);
  }

  @Test
  void agreementLeavesOutRowsEitherTraceDidNotRecordInEveryChunk() {
    int tokens = 4096 + 4096 + 300;
    RoutingTrace a = masked(1, tokens, true), b = masked(2, tokens, false), c = masked(3, tokens, true);
    assertTrue(a.hasMask());
    assertFalse(b.hasMask());
    for (RoutingTrace[] pair : new RoutingTrace[][] {{a, b}, {b, a}, {a, c}, {b, b}}) {
      RoutingAgreement.Result want = expected(pair[0], pair[1]);
      RoutingAgreement.Result got = TraceMetrics.agreement(pair[0], pair[1], RoutingAgreement.Engine.JAVA);
      assertEquals(want, got);
      assertTrue(got.tokens() > 4096 && got.tokens() <= tokens, "tokens " + got.tokens());
    }
    assertEquals(tokens, TraceMetrics.agreement(b, b, RoutingAgreement.Engine.JAVA).tokens());
    assertEquals(0, TraceMetrics.agreement(b, b, RoutingAgreement.Engine.JAVA).differingRows());
  }
}
