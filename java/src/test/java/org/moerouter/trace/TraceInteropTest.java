// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.MinusOneRows;
import org.moerouter.MoeRouterException;
import org.moerouter.TestData;
import org.moerouter.replay.LayerKey;
import org.moerouter.replay.ReplayAction;
import org.moerouter.replay.ReplayRegistry;

/**
 * Round trips through the layouts of slime, miles, verl and Megatron, each built here from the layout's
 * description (shapes, dtypes, padding conventions) as the peer's code produces it, not by this library.
 */
class TraceInteropTest {
  @TempDir Path dir;
  static final int E = 32, K = 2, NUM_LAYERS = 6;
  static final int[] MOE = {1, 3, 5}; // dense layers 0, 2, 4 hold zeros, as SGLang's capture gives them
  final Random rnd = new Random(11);

  /** slime's rollout_routed_experts of one sample: int32 [len(tokens) - 1, num_layers, k], dense layers zero. */
  int[] slimeSample(int tokens) {
    int rows = tokens - 1;
    int[] a = new int[rows * NUM_LAYERS * K];
    int[] sel = TestData.randomSelection(rnd, rows * MOE.length, K, E);
    for (int r = 0; r < rows; r++)
      for (int l = 0; l < MOE.length; l++) System.arraycopy(sel, (r * MOE.length + l) * K, a, (r * NUM_LAYERS + MOE[l]) * K, K);
    return a;
  }

  static Npy.Array i32(int[] data, long... shape) {
    return new Npy.Array(Npy.Dtype.I4, shape, data);
  }

  @Test
  void slimeRoundTripAddsTheAlignmentRowAndDropsItAgain() throws Exception {
    int[] tokens = {5, 3, 9};
    List<Npy.Array> samples = new ArrayList<>();
    for (int n : tokens) samples.add(i32(slimeSample(n), n - 1, NUM_LAYERS, K));
    TraceInterop.Imported im = TraceInterop.fromSlime(samples, new TraceInterop.ImportOptions().experts(E).model("glm"));
    RoutingTrace t = im.trace();
    assertArrayEquals(MOE, t.layerIds(), "dense columns dropped by default");
    assertTrue(im.notes().get(0).contains("3 of 6 layer columns are all zero (dense layers), kept MoE layers [1, 3, 5]"), im.notes().toString());
    for (int s = 0; s < tokens.length; s++) {
      assertEquals(tokens[s], t.sampleTokens(s), "one row per token of the training sequence");
      for (int r = 0; r < tokens[s]; r++) assertEquals(r < tokens[s] - 1, t.recorded(s, r), "the alignment row is mask 0");
      int[] src = (int[]) samples.get(s).data();
      for (int r = 0; r < tokens[s] - 1; r++)
        for (int l = 0; l < MOE.length; l++)
          for (int j = 0; j < K; j++) assertEquals(src[(r * NUM_LAYERS + MOE[l]) * K + j], t.expert(s, r, l, j));
    }
    // What slime feeds replay (prepare_routed_experts_for_routing_replay: one padding row per sample, then
    // concatenated) is what this trace packs, row for row, except that the padding row routes live here.
    TraceSlicing.Packed p = TraceSlicing.pack(t, new int[] {0, 1, 2}, TraceSlicing.cuSeqlens(t, new int[] {0, 1, 2}), 0, 3);
    int row = 0;
    for (int s = 0; s < tokens.length; s++) {
      int[] src = (int[]) samples.get(s).data();
      for (int r = 0; r < tokens[s]; r++, row++) {
        assertEquals(r < tokens[s] - 1 ? 1 : 0, p.mask()[row]);
        if (r == tokens[s] - 1) continue;
        for (int l = 0; l < MOE.length; l++)
          for (int j = 0; j < K; j++) assertEquals(src[(r * NUM_LAYERS + MOE[l]) * K + j], p.indices()[(row * MOE.length + l) * K + j]);
      }
    }
    List<Npy.Array> back = TraceInterop.toSlime(t, new TraceInterop.ExportOptions().numLayers(NUM_LAYERS));
    for (int s = 0; s < tokens.length; s++) {
      assertEquals(Npy.Dtype.I4, back.get(s).dtype());
      assertArrayEquals(samples.get(s).shape(), back.get(s).shape());
      assertArrayEquals((int[]) samples.get(s).data(), (int[]) back.get(s).data(), "sample " + s + " byte for byte");
    }
    // Through files: .npz as np.savez writes it, safetensors as Python writes it, a directory of .npy.
    for (String name : new String[] {"slime.npz", "slime.safetensors"}) {
      Path f = dir.resolve(name);
      TraceInterop.write(TraceInterop.Layout.SLIME, t, f, new TraceInterop.ExportOptions().numLayers(NUM_LAYERS));
      // .npz carries no metadata (give E, the model and the layers); safetensors metadata restores them.
      TraceInterop.ImportOptions o = name.endsWith(".npz") ? new TraceInterop.ImportOptions().experts(E).model("glm")
          : new TraceInterop.ImportOptions();
      RoutingTrace r = TraceInterop.read(TraceInterop.Layout.SLIME, f, null, o).trace();
      assertTrue(r.contentEquals(t), name);
    }
    Path d = Files.createDirectory(dir.resolve("samples"));
    for (int s = 0; s < tokens.length; s++) Npy.write(d.resolve("sample_" + s + ".npy"), samples.get(s));
    Files.move(d.resolve("sample_2.npy"), d.resolve("sample_10.npy")); // natural order: 0, 1, 10
    RoutingTrace fromDir = TraceInterop.read(TraceInterop.Layout.SLIME, d, null,
        new TraceInterop.ImportOptions().experts(E).model("glm").layerIds(MOE)).trace();
    assertTrue(fromDir.contentEquals(t));
  }

  @Test
  void slimeImportRejectsWhatDoesNotFit() {
    List<Npy.Array> two = List.of(i32(slimeSample(4), 3, NUM_LAYERS, K), i32(new int[3 * 5 * K], 3, 5, K));
    TraceFormatException e = assertThrows(TraceFormatException.class, () -> TraceInterop.fromSlime(two, new TraceInterop.ImportOptions()));
    assertEquals("slime sample 1 is [3, 5, 2], sample 0 is [3, 6, 2]: every sample needs the same num_layers and k", e.getMessage());
    // A dense (zero) column selected by id is not a top-k set.
    e = assertThrows(TraceFormatException.class, () -> TraceInterop.fromSlime(List.of(two.get(0)),
        new TraceInterop.ImportOptions().experts(E).layerIds(0, 1)));
    assertEquals("slime sample 0: token 0 layer 0: expert 0 appears twice in the top-2 set", e.getMessage());
    Npy.Array f = new Npy.Array(Npy.Dtype.F4, new long[] {1, 1, 2}, new float[] {0, 1});
    e = assertThrows(TraceFormatException.class, () -> TraceInterop.fromSlime(List.of(f), new TraceInterop.ImportOptions()));
    assertEquals("slime sample 0: routing indices must be integers (int32, int64, uint8, uint16), got <f4", e.getMessage());
    MoeRouterException m = assertThrows(MoeRouterException.class,
        () -> TraceInterop.fromSlime(List.of(two.get(0)), new TraceInterop.ImportOptions().layerIds(6)));
    assertEquals("slime: layer id 6 is not a column of [.., 6, 2] (ids are 0-based model layer numbers)", m.getMessage());
  }

  /** miles' training layout (fill_replay_data): samples plus one -1 row each, concatenated, padded with -1 rows. */
  @Test
  void milesPaddingRowsOfMinusOneBecomeMaskZeroAndComeBackAsMinusOne() throws Exception {
    int[] s0 = slimeSample(4), s1 = slimeSample(3);
    int rowInts = NUM_LAYERS * K;
    int rows = 3 + 1 + 2 + 1 + 1; // sample 0, pad, sample 1, pad, pad to a multiple of 4
    int[] packed = new int[rows * rowInts];
    Arrays.fill(packed, -1);
    System.arraycopy(s0, 0, packed, 0, s0.length);
    System.arraycopy(s1, 0, packed, 4 * rowInts, s1.length);
    Npy.Array a = i32(packed, rows, NUM_LAYERS, K);
    RoutingTrace t = TraceInterop.fromMiles(List.of(a), new TraceInterop.ImportOptions().experts(E).align(false)).trace();
    assertArrayEquals(new byte[] {1, 1, 1, 0, 1, 1, 0, 0}, t.sampleMask(0));
    assertEquals(1, t.expert(0, 3, 0, 1), "masked rows hold 0..k-1");
    // Export writes them back as -1 in every column, and the rest byte for byte; the last row is the alignment drop.
    List<Npy.Array> back = TraceInterop.toMiles(t, new TraceInterop.ExportOptions().numLayers(NUM_LAYERS));
    assertArrayEquals(Arrays.copyOf(packed, (rows - 1) * rowInts), (int[]) back.get(0).data());

    // REJECT refuses the padding, ARANGE replays experts 0..k-1 (miles _get_replay_result), mixed rows never pass.
    TraceFormatException e = assertThrows(TraceFormatException.class, () -> TraceInterop.fromMiles(List.of(a),
        new TraceInterop.ImportOptions().experts(E).align(false).minusOneRows(MinusOneRows.REJECT)));
    assertEquals("miles sample 0 row 3 is all -1 (padding), rejected under minus_one_rows REJECT (LIVE keeps it as mask 0,"
        + " ARANGE replays experts 0..k-1)", e.getMessage());
    RoutingTrace ar = TraceInterop.fromMiles(List.of(a), new TraceInterop.ImportOptions().experts(E).align(false)
        .minusOneRows(MinusOneRows.ARANGE)).trace();
    assertFalse(ar.hasMask());
    assertArrayEquals(new int[] {0, 1, 0, 1, 0, 1}, Arrays.copyOfRange(ar.sample(0), 3 * 6, 4 * 6));
    int[] mixed = packed.clone();
    mixed[3 * rowInts + 3 * K] = 7; // row 3, layer 3, slot 0
    e = assertThrows(TraceFormatException.class, () -> TraceInterop.fromMiles(List.of(i32(mixed, rows, NUM_LAYERS, K)),
        new TraceInterop.ImportOptions().experts(E).align(false)));
    assertEquals("miles sample 0 row 3 layer 3: [7, -1] mixes -1 (padding) with experts", e.getMessage());
    int[] perLayer = packed.clone();
    Arrays.fill(perLayer, 3 * rowInts + 3 * K, 3 * rowInts + 4 * K, 5);
    perLayer[3 * rowInts + 3 * K + 1] = 6;
    e = assertThrows(TraceFormatException.class, () -> TraceInterop.fromMiles(List.of(i32(perLayer, rows, NUM_LAYERS, K)),
        new TraceInterop.ImportOptions().experts(E).align(false)));
    assertEquals("miles sample 0 row 3: layer 5 is padding (-1) but layer 3 is not; a trace's mask is per token", e.getMessage());
  }

  /** verl: prompt left-padded, response right-padded, rows zero where the rollout left them unfilled. */
  @Test
  void verlStripsPaddingByTheAttentionMaskAndKeepsUnfilledRowsLive() throws Exception {
    int batch = 3, seq = 10, layers = 3; // MoE layers only, as verl stores when num_layers differs
    int[][] prompt = {{3, 2}, {1, 4}, {4, 5}}; // {left padding, prompt length}; response fills the rest partly
    int[] response = {4, 3, 1};
    int[] experts = new int[batch * seq * layers * K];
    long[] mask = new long[batch * seq];
    List<int[]> expected = new ArrayList<>();
    for (int b = 0; b < batch; b++) {
      int start = prompt[b][0], valid = prompt[b][1] + response[b];
      int filled = valid - 1; // the last token was not routed by the rollout: its row stays zero
      int[] sel = TestData.randomSelection(rnd, filled * layers, K, E);
      for (int r = 0; r < valid; r++) mask[b * seq + start + r] = 1;
      System.arraycopy(sel, 0, experts, (b * seq + start) * layers * K, sel.length);
      expected.add(sel);
    }
    Npy.Array ex = i32(experts, batch, seq, layers, K), am = new Npy.Array(Npy.Dtype.I8, new long[] {batch, seq}, mask);
    TraceInterop.Imported im = TraceInterop.fromVerl(ex, am, new TraceInterop.ImportOptions().experts(E));
    RoutingTrace t = im.trace();
    assertEquals(batch, t.samples());
    for (int b = 0; b < batch; b++) {
      int valid = prompt[b][1] + response[b];
      assertEquals(valid, t.sampleTokens(b));
      assertFalse(t.recorded(b, valid - 1), "the unfilled (all-zero) row routes live");
      int[] got = t.sample(b);
      assertArrayEquals(expected.get(b), Arrays.copyOf(got, expected.get(b).length));
    }
    assertTrue(im.notes().stream().anyMatch(n -> n.contains("3 rows kept as mask 0 (route live): 3 unfilled (all zero)")), im.notes().toString());
    // Export right-pads; verl strips by the mask, so the same rows come back.
    Npy.Array[] back = TraceInterop.toVerl(t, new TraceInterop.ExportOptions());
    assertArrayEquals(new long[] {batch, 7, layers, K}, back[0].shape());
    assertArrayEquals(new long[] {batch, 7}, back[1].shape());
    assertEquals(Npy.Dtype.I8, back[1].dtype());
    assertTrue(TraceInterop.fromVerl(back[0], back[1], new TraceInterop.ImportOptions().experts(E)).trace().contentEquals(t));
    for (String name : new String[] {"verl.safetensors", "verl.npz"}) {
      Path f = dir.resolve(name);
      TraceInterop.write(TraceInterop.Layout.VERL, t, f, null);
      assertTrue(TraceInterop.read(TraceInterop.Layout.VERL, f, null, null).trace().contentEquals(t), name);
    }
    Path e1 = dir.resolve("experts.npy"), m1 = dir.resolve("mask.npy");
    Npy.write(e1, ex);
    Npy.write(m1, new Npy.Array(Npy.Dtype.B1, new long[] {batch, seq}, toBool(mask)));
    assertTrue(TraceInterop.read(TraceInterop.Layout.VERL, e1, m1, new TraceInterop.ImportOptions().experts(E)).trace().contentEquals(t));

    TraceFormatException e = assertThrows(TraceFormatException.class,
        () -> TraceInterop.fromVerl(ex, new Npy.Array(Npy.Dtype.I8, new long[] {batch, seq - 1}, new long[batch * (seq - 1)]), null));
    assertEquals("verl attention_mask must be [batch, max_seq] = [3, 10], got [3, 9]", e.getMessage());
    e = assertThrows(TraceFormatException.class, () -> TraceInterop.read(TraceInterop.Layout.VERL, e1, null, null));
    assertTrue(e.getMessage().contains("no array 'routed_experts' (verl needs routed_experts and attention_mask"), e.getMessage());
  }

  static byte[] toBool(long[] m) {
    byte[] out = new byte[m.length];
    for (int i = 0; i < m.length; i++) out[i] = (byte) m[i];
    return out;
  }

  /** Megatron: int64 [tokens, layers, k], decoder routers then MTP routers, in creation order. */
  @Test
  void megatronRoundTripKeepsMtpLayersApartFromDecoderLayersOfTheSameNumber() throws Exception {
    int tokens = 7, layers = 4;
    int[] sel = TestData.randomSelection(rnd, tokens * layers, K, E);
    long[] data = new long[sel.length];
    for (int i = 0; i < sel.length; i++) data[i] = sel[i];
    Npy.Array a = new Npy.Array(Npy.Dtype.I8, new long[] {tokens, layers, K}, data);
    TraceInterop.ImportOptions o = new TraceInterop.ImportOptions().experts(E).layerIds(0, 1, 2).mtpLayerIds(1).sampleOffsets(0, 3, 7);
    RoutingTrace t = TraceInterop.fromMegatron(a, o).trace();
    assertArrayEquals(new LayerKey[] {LayerKey.decoder(0), LayerKey.decoder(1), LayerKey.decoder(2), LayerKey.mtp(1)}, t.layerKeys());
    Npy.Array back = TraceInterop.toMegatron(t, new TraceInterop.ExportOptions());
    assertEquals(Npy.Dtype.I8, back.dtype());
    assertArrayEquals(data, (long[]) back.data());
    // Every integer dtype a Python tool may save reads the same.
    for (Npy.Dtype d : new Npy.Dtype[] {Npy.Dtype.U1, Npy.Dtype.U2, Npy.Dtype.I4}) {
      Object conv = d == Npy.Dtype.I4 ? sel.clone() : d == Npy.Dtype.U2 ? shorts(sel) : bytes(sel);
      assertTrue(TraceInterop.fromMegatron(new Npy.Array(d, new long[] {tokens, layers, K}, conv), o).trace().contentEquals(t), d.toString());
    }
    // The MTP layer replays its own column, never decoder layer 1's.
    ReplayRegistry reg = new ReplayRegistry();
    for (LayerKey key : t.layerKeys()) reg.addLayer(key, E, K);
    int[] first = new int[3 * layers * K];
    t.copySample(0, 0, layers, first, 0);
    reg.setReplayData(first, new long[] {3, layers, K}, t.layerKeys(), null);
    reg.setAction(ReplayAction.REPLAY_FORWARD);
    try (org.moerouter.MoeRouter r = org.moerouter.MoeRouter.create(org.moerouter.RouterConfig.builder(E, K).build(),
        org.moerouter.Backend.JAVA)) {
      int[] mtp = new int[3 * K], dec = new int[3 * K];
      float[] logits = new float[3 * E];
      reg.layer(LayerKey.mtp(1)).route(r, logits, 3, mtp, new float[3 * K]);
      reg.layer(LayerKey.decoder(1)).route(r, logits, 3, dec, new float[3 * K]);
      for (int tok = 0; tok < 3; tok++)
        for (int j = 0; j < K; j++) {
          assertEquals(sel[(tok * layers + 3) * K + j], mtp[tok * K + j]);
          assertEquals(sel[(tok * layers + 1) * K + j], dec[tok * K + j]);
        }
    }
    for (String name : new String[] {"m.npy", "m.safetensors"}) {
      Path f = dir.resolve(name);
      TraceInterop.write(TraceInterop.Layout.MEGATRON, t, f, null);
      TraceInterop.ImportOptions again = name.endsWith(".npy") ? o : new TraceInterop.ImportOptions();
      RoutingTrace r = TraceInterop.read(TraceInterop.Layout.MEGATRON, f, null, again).trace();
      assertTrue(r.contentEquals(t), name + (name.endsWith(".npy") ? "" : ": metadata and sample_offsets restore the rest"));
    }
    // No MTP column in slime's layout, and masked rows have no place in Megatron's.
    TraceFormatException e = assertThrows(TraceFormatException.class, () -> TraceInterop.toSlime(t, new TraceInterop.ExportOptions()));
    assertTrue(e.getMessage().startsWith("slime's [tokens, num_layers, k] has no column for MTP layers"), e.getMessage());
    RoutingTrace masked = RoutingTrace.builder("m", E, K, new int[] {0}, "").addSample(new int[] {1, 2, -1, -1}, new byte[] {1, 0}).build();
    e = assertThrows(TraceFormatException.class, () -> TraceInterop.toMegatron(masked, new TraceInterop.ExportOptions()));
    assertEquals("megatron has no per-token mask: sample 0 token 1 was not recorded (mask 0);"
        + " to write it anyway choose --masked-rows minus-one, arange or zeros (MaskedRows)", e.getMessage());
    assertArrayEquals(new long[] {1, 2, 0, 1}, (long[]) TraceInterop.toMegatron(masked,
        new TraceInterop.ExportOptions().maskedRows(TraceInterop.MaskedRows.ARANGE)).data());
  }

  static short[] shorts(int[] a) {
    short[] s = new short[a.length];
    for (int i = 0; i < a.length; i++) s[i] = (short) a[i];
    return s;
  }

  static byte[] bytes(int[] a) {
    byte[] s = new byte[a.length];
    for (int i = 0; i < a.length; i++) s[i] = (byte) a[i];
    return s;
  }

  @Test
  void naturalOrderOfSampleNames() {
    String[] names = {"arr_10", "arr_2", "arr_1", "sample_003", "sample_20", "arr_0"};
    Arrays.sort(names, TraceInterop::naturalCompare);
    assertEquals("[arr_0, arr_1, arr_2, arr_10, sample_003, sample_20]", Arrays.toString(names));
  }

  /** What a Python user does with the exported files, where numpy is installed (skipped otherwise). */
  @Test
  void numpyLoadsTheExportsAsEachSystemExpects() throws Exception {
    Assumptions.assumeTrue(TraceFilesTest.pythonWithNumpy(), "python3 with numpy not available");
    List<Npy.Array> samples = List.of(i32(slimeSample(5), 4, NUM_LAYERS, K), i32(slimeSample(3), 2, NUM_LAYERS, K));
    RoutingTrace t = TraceInterop.fromSlime(samples, new TraceInterop.ImportOptions().experts(E)).trace();
    Path npz = dir.resolve("slime.npz"), meg = dir.resolve("meg.npy"), verl = dir.resolve("verl.npz");
    TraceInterop.write(TraceInterop.Layout.SLIME, t, npz, new TraceInterop.ExportOptions().numLayers(NUM_LAYERS));
    TraceInterop.write(TraceInterop.Layout.MEGATRON, t, meg, new TraceInterop.ExportOptions().maskedRows(TraceInterop.MaskedRows.ARANGE));
    TraceInterop.write(TraceInterop.Layout.VERL, t, verl, null);
    String script = String.join("\n",
        "import sys, numpy as np",
        "z = np.load(sys.argv[1]); s = [z[f'arr_{i}'] for i in range(len(z.files))]",
        "m = np.load(sys.argv[2]); v = np.load(sys.argv[3])",
        "per_layer = [m[:, l] for l in range(m.shape[1])]  # Megatron set_replay_data: one [tokens, k] per layer",
        "print([(a.dtype.name, a.shape) for a in s], m.dtype.name, m.shape, per_layer[0].shape,",
        "      v['routed_experts'].dtype.name, v['routed_experts'].shape, v['attention_mask'].sum(axis=1).tolist(),",
        "      s[0][1, 3].tolist())");
    Path py = dir.resolve("load.py");
    Files.writeString(py, script);
    Process proc = new ProcessBuilder("python3", py.toString(), npz.toString(), meg.toString(), verl.toString())
        .redirectErrorStream(true).start();
    String out = new String(proc.getInputStream().readAllBytes()).trim();
    assertTrue(proc.waitFor(60, TimeUnit.SECONDS));
    assertEquals(0, proc.exitValue(), out);
    int[] s0 = (int[]) samples.get(0).data();
    assertEquals("[('int32', (4, 6, 2)), ('int32', (2, 6, 2))] int64 (8, 3, 2) (8, 2) int32 (2, 5, 6, 2) [5, 3] ["
        + s0[(1 * NUM_LAYERS + 3) * K] + ", " + s0[(1 * NUM_LAYERS + 3) * K + 1] + "]", out);
  }
}
