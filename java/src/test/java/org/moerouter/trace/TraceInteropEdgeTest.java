// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.MinusOneRows;
import org.moerouter.MoeRouterException;
import org.moerouter.Status;
import org.moerouter.trace.TraceInterop.ImportOptions;
import org.moerouter.trace.TraceInterop.Imported;
import org.moerouter.trace.TraceInterop.Layout;

/**
 * The layout conversion every import shares ({@code TraceInterop.fromRows}) and the metadata that fills unset
 * options ({@code applyMetadata}), on small hand-written arrays: exact layer keys, masks, inferred E, notes and
 * messages (these closed the PIT survivors in both methods).
 */
class TraceInteropEdgeTest {
  @TempDir Path dir;

  private static Npy.Array i4(int[] data, long... shape) {
    return new Npy.Array(Npy.Dtype.I4, shape, data);
  }

  // Megatron [3 tokens, 2 layers, k = 2], largest index 3.
  private static final int[] MEG = {0, 1, 2, 3, 1, 2, 3, 0, 2, 3, 0, 1};

  @Test
  void megatronInfersExpertsAndNumbersLayers() {
    Imported im = TraceInterop.fromMegatron(i4(MEG, 3, 2, 2), new ImportOptions());
    RoutingTrace t = im.trace();
    assertEquals(List.of("megatron: --experts not given; inferred E = 4 (max index + 1)"), im.notes());
    assertEquals(4, t.experts());
    assertArrayEquals(new int[] {0, 1}, t.layerIds());
    assertEquals(0, t.mtpLayers());
    assertEquals("", t.model());
    assertEquals("", t.scoreFunction());
    assertArrayEquals(MEG, t.sample(0));
    assertFalse(t.hasMask());

    im = TraceInterop.fromMegatron(i4(MEG, 3, 2, 2), new ImportOptions().experts(8).mtpLayerIds(7).sampleOffsets(0, 1, 3)
        .model("m").scoreFunction("sigmoid"));
    t = im.trace();
    assertEquals(List.of(), im.notes());
    assertEquals(8, t.experts());
    assertArrayEquals(new int[] {0, 7}, t.layerIds());
    assertEquals(1, t.mtpLayers());
    assertEquals("m", t.model());
    assertEquals("sigmoid", t.scoreFunction());
    assertEquals(2, t.samples());
    assertEquals(1, t.sampleTokens(0));
    assertEquals(2, t.sampleTokens(1));
    // Smallest indices: E is still at least k.
    im = TraceInterop.fromMegatron(i4(new int[] {1, 0, 0, 1}, 2, 1, 2), new ImportOptions());
    assertEquals(2, im.trace().experts());
  }

  @Test
  void megatronRejectsLayerCountsAndOffsetsOneOff() {
    TraceFormatException f = assertThrows(TraceFormatException.class,
        () -> TraceInterop.fromMegatron(i4(MEG, 3, 2, 2), new ImportOptions().mtpLayerIds(7, 8, 9)));
    assertEquals("megatron: 3 MTP layers given for 2 columns", f.getMessage());
    MoeRouterException e = assertThrows(MoeRouterException.class,
        () -> TraceInterop.fromMegatron(i4(MEG, 3, 2, 2), new ImportOptions().layerIds(5, 6).mtpLayerIds(7)));
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertEquals("2 decoder layer ids given for 1 decoder columns of [tokens, 2, 2] (1 MTP columns last)", e.getMessage());
    e = assertThrows(MoeRouterException.class, () -> TraceInterop.fromMegatron(i4(MEG, 3, 2, 2), new ImportOptions().layerIds(5)));
    assertEquals("1 decoder layer ids given for 2 decoder columns of [tokens, 2, 2]", e.getMessage());
    e = assertThrows(MoeRouterException.class, () -> TraceInterop.fromMegatron(i4(MEG, 3, 2, 2), new ImportOptions().sampleOffsets(0, 2)));
    assertEquals("sample offsets must run from 0 to 3, got [0, 2]", e.getMessage());
    e = assertThrows(MoeRouterException.class, () -> TraceInterop.fromMegatron(i4(MEG, 3, 2, 2), new ImportOptions().sampleOffsets(1, 3)));
    assertEquals("sample offsets must run from 0 to 3, got [1, 3]", e.getMessage());
    e = assertThrows(MoeRouterException.class,
        () -> TraceInterop.fromMegatron(i4(MEG, 3, 2, 2), new ImportOptions().sampleOffsets(0, 2, 1, 3)));
    assertEquals("sample offsets decrease at 2", e.getMessage());
    int[] big = MEG.clone();
    big[3] = 65537;
    f = assertThrows(TraceFormatException.class, () -> TraceInterop.fromMegatron(i4(big, 3, 2, 2), new ImportOptions()));
    assertEquals("Megatron indices: element 3 is 65537, not an expert index (or -1 padding)", f.getMessage());
    big[3] = -2;
    f = assertThrows(TraceFormatException.class, () -> TraceInterop.fromMegatron(i4(big, 3, 2, 2), new ImportOptions()));
    assertEquals("Megatron indices: element 3 is -2, not an expert index (or -1 padding)", f.getMessage());
  }

  @Test
  void paddingRowsUnderEachPolicy() {
    int[] padded = {0, 1, 2, 3, -1, -1, -1, -1, 2, 3, 0, 1};
    TraceFormatException f = assertThrows(TraceFormatException.class, () -> TraceInterop.fromMegatron(i4(padded, 3, 2, 2), new ImportOptions()));
    assertEquals("megatron sample 0 row 1 is all -1 (padding), rejected under minus_one_rows REJECT (LIVE keeps it as mask 0,"
        + " ARANGE replays experts 0..k-1)", f.getMessage());
    Imported live = TraceInterop.fromMegatron(i4(padded, 3, 2, 2), new ImportOptions().minusOneRows(MinusOneRows.LIVE).experts(4));
    assertEquals(List.of("megatron: 1 rows kept as mask 0 (route live): 1 padding (-1)"), live.notes());
    assertTrue(live.trace().hasMask());
    assertEquals(1, live.trace().maskedTokens());
    assertTrue(live.trace().recorded(0, 0));
    assertFalse(live.trace().recorded(0, 1));
    assertTrue(live.trace().recorded(0, 2));
    Imported arange = TraceInterop.fromMegatron(i4(padded, 3, 2, 2), new ImportOptions().minusOneRows(MinusOneRows.ARANGE));
    assertEquals(List.of("megatron: --experts not given; inferred E = 4 (max index + 1)"), arange.notes());
    assertFalse(arange.trace().hasMask());
    assertArrayEquals(new int[] {0, 1, 2, 3, 0, 1, 0, 1, 2, 3, 0, 1}, arange.trace().sample(0));

    int[] mixed = {0, 1, 2, 3, -1, 2, 0, 1};
    f = assertThrows(TraceFormatException.class, () -> TraceInterop.fromMegatron(i4(mixed, 2, 2, 2), new ImportOptions()));
    assertEquals("megatron sample 0 row 1 layer 0: [-1, 2] mixes -1 (padding) with experts", f.getMessage());
    int[] half = {0, 1, 2, 3, 0, 1, -1, -1};
    f = assertThrows(TraceFormatException.class, () -> TraceInterop.fromMegatron(i4(half, 2, 2, 2), new ImportOptions()));
    assertEquals("megatron sample 0 row 1: layer 1 is padding (-1) but layer 0 is not; a trace's mask is per token", f.getMessage());
  }

  @Test
  void slimeDropsDenseColumnsAndAddsTheAlignmentRow() {
    // [2 rows, 3 layers, k = 2]; layer 1 is dense (all zero).
    int[] s0 = {0, 1, 0, 0, 2, 3, 1, 2, 0, 0, 3, 0};
    Imported im = TraceInterop.fromSlime(List.of(i4(s0, 2, 3, 2)), new ImportOptions());
    assertEquals(List.of("slime: 1 of 3 layer columns are all zero (dense layers), kept MoE layers [0, 2] (--layer-ids to choose)",
        "slime: --experts not given; inferred E = 4 (max index + 1)",
        "slime: 1 rows kept as mask 0 (route live): 1 alignment (one per sample)"), im.notes());
    RoutingTrace t = im.trace();
    assertArrayEquals(new int[] {0, 2}, t.layerIds());
    assertEquals(3, t.sampleTokens(0));
    assertTrue(t.recorded(0, 1));
    assertFalse(t.recorded(0, 2));
    int[] first2 = new int[8];
    System.arraycopy(t.sample(0), 0, first2, 0, 8);
    assertArrayEquals(new int[] {0, 1, 2, 3, 1, 2, 3, 0}, first2);

    Imported noAlign = TraceInterop.fromSlime(List.of(i4(s0, 2, 3, 2)), new ImportOptions().align(false).layerIds(2).experts(4));
    assertEquals(List.of(), noAlign.notes());
    assertEquals(2, noAlign.trace().sampleTokens(0));
    assertFalse(noAlign.trace().hasMask());
    assertArrayEquals(new int[] {2, 3, 3, 0}, noAlign.trace().sample(0));

    MoeRouterException e = assertThrows(MoeRouterException.class,
        () -> TraceInterop.fromSlime(List.of(i4(s0, 2, 3, 2)), new ImportOptions().layerIds(3)));
    assertEquals("slime: layer id 3 is not a column of [.., 3, 2] (ids are 0-based model layer numbers)", e.getMessage());
    e = assertThrows(MoeRouterException.class, () -> TraceInterop.fromSlime(List.of(i4(s0, 2, 3, 2)), new ImportOptions().layerIds(-1)));
    assertEquals("slime: layer id -1 is not a column of [.., 3, 2] (ids are 0-based model layer numbers)", e.getMessage());
    e = assertThrows(MoeRouterException.class, () -> TraceInterop.fromSlime(List.of(i4(s0, 2, 3, 2)), new ImportOptions().mtpLayerIds(9)));
    assertEquals("slime has no MTP columns (Megatron layout only)", e.getMessage());
    TraceFormatException f = assertThrows(TraceFormatException.class,
        () -> TraceInterop.fromSlime(List.of(i4(new int[] {0, 0, -1, -1}, 1, 2, 2)), new ImportOptions()));
    assertEquals("slime: every one of the 2 layer columns is all zero (or -1): no MoE routing recorded", f.getMessage());
  }

  @Test
  void verlUnfilledRowsAndMaskValues() {
    // [1 batch, 3 positions, 1 layer, k = 2]: position 1 unfilled (zeros), position 2 outside the mask.
    int[] re = {2, 3, 0, 0, 1, 0};
    Npy.Array mask = new Npy.Array(Npy.Dtype.I8, new long[] {1, 3}, new long[] {1, 1, 0});
    Imported im = TraceInterop.fromVerl(i4(re, 1, 3, 1, 2), mask, new ImportOptions().experts(4));
    assertEquals(List.of("verl: 1 rows kept as mask 0 (route live): 1 unfilled (all zero)"), im.notes());
    assertEquals(2, im.trace().sampleTokens(0));
    assertTrue(im.trace().recorded(0, 0));
    assertFalse(im.trace().recorded(0, 1));
    Npy.Array bad = new Npy.Array(Npy.Dtype.I8, new long[] {1, 3}, new long[] {1, 2, 0});
    TraceFormatException f = assertThrows(TraceFormatException.class, () -> TraceInterop.fromVerl(i4(re, 1, 3, 1, 2), bad, new ImportOptions()));
    assertEquals("verl attention_mask[0, 1] is 2.0, expected 0 or 1", f.getMessage());
  }

  private Path safetensors(Map<String, String> meta) throws IOException {
    Path p = dir.resolve("m" + meta.hashCode() + ".safetensors");
    Safetensors.write(p, meta, Map.of("routed_experts", i4(MEG, 3, 2, 2)));
    return p;
  }

  @Test
  void metadataFillsOnlyUnsetOptions() throws IOException {
    Map<String, String> meta = new LinkedHashMap<>();
    meta.put("model", "qwen");
    meta.put("score_function", "sigmoid");
    meta.put("experts", "9");
    meta.put("layer_ids", "[4]");
    meta.put("mtp_layer_ids", "[6]");
    Path p = safetensors(meta);
    RoutingTrace t = TraceInterop.read(Layout.MEGATRON, p, null, null).trace();
    assertEquals("qwen", t.model());
    assertEquals("sigmoid", t.scoreFunction());
    assertEquals(9, t.experts());
    assertArrayEquals(new int[] {4, 6}, t.layerIds());
    assertEquals(1, t.mtpLayers());
    ImportOptions mine = new ImportOptions().model("mine").scoreFunction("softmax").experts(5).layerIds(1, 2).mtpLayerIds();
    t = TraceInterop.read(Layout.MEGATRON, p, null, mine).trace();
    assertEquals("mine", t.model());
    assertEquals("softmax", t.scoreFunction());
    assertEquals(5, t.experts());
    assertArrayEquals(new int[] {1, 2}, t.layerIds());
    assertEquals(0, t.mtpLayers());

    // Outside Megatron, layer_ids picks columns and mtp_layer_ids is not read.
    meta.put("layer_ids", "[1]");
    t = TraceInterop.read(Layout.SLIME, safetensors(meta), null, new ImportOptions().align(false)).trace();
    assertArrayEquals(new int[] {1}, t.layerIds());
    assertArrayEquals(new int[] {2, 3, 3, 0, 0, 1}, t.sample(0));

    meta.put("experts", "nine");
    Path bad = safetensors(meta);
    TraceFormatException f = assertThrows(TraceFormatException.class, () -> TraceInterop.read(Layout.MEGATRON, bad, null, null));
    assertEquals("metadata experts = 'nine' is not an integer", f.getMessage());
    meta.put("experts", "9");
    meta.put("layer_ids", "[2147483648]");
    Path bad2 = safetensors(meta);
    f = assertThrows(TraceFormatException.class, () -> TraceInterop.read(Layout.MEGATRON, bad2, null, null));
    assertEquals("metadata layer_ids = '[2147483648]' is not a JSON array of integers", f.getMessage());
    meta.put("layer_ids", "{}");
    Path bad3 = safetensors(meta);
    f = assertThrows(TraceFormatException.class, () -> TraceInterop.read(Layout.MEGATRON, bad3, null, null));
    assertEquals("metadata layer_ids = '{}' is not a JSON array of integers", f.getMessage());
  }
}
