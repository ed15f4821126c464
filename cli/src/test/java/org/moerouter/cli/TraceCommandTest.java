// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.trace.Npy;
import org.moerouter.trace.RoutingTrace;
import org.moerouter.trace.TraceFiles;
import org.moerouter.trace.TraceTestSupport;

class TraceCommandTest {
  @TempDir Path dir;
  String out, err;

  int run(String... args) {
    ByteArrayOutputStream o = new ByteArrayOutputStream(), e = new ByteArrayOutputStream();
    int rc = TraceCommand.run(args, new PrintStream(o, true, StandardCharsets.UTF_8), new PrintStream(e, true, StandardCharsets.UTF_8));
    out = o.toString(StandardCharsets.UTF_8);
    err = e.toString(StandardCharsets.UTF_8);
    return rc;
  }

  @Test
  void inspectConvertDiff() throws Exception {
    RoutingTrace t = TraceTestSupport.random(8, 64, 4, new int[] {3, 5}, new int[] {6, 4});
    Path a = dir.resolve("a.safetensors");
    TraceFiles.write(t, a);
    assertEquals(0, run("inspect", a.toString()), err);
    assertTrue(out.contains("experts:        64"), out);
    assertTrue(out.contains("indices:        U8 [10, 2, 4]"), out);
    assertTrue(out.contains("(verified)"), out);

    Path npy = dir.resolve("a.npy");
    assertEquals(0, run("convert", a.toString(), npy.toString()), err);
    assertTrue(err.contains("2 samples concatenated"), err);
    Path back = dir.resolve("b.safetensors");
    assertEquals(0, run("convert", npy.toString(), back.toString(), "--experts", "64", "--model", "test-model", "--score", "softmax",
        "--layer-ids", "3,5", "--sample-offsets", "0,6,10"), err);
    assertTrue(TraceFiles.read(back).contentEquals(t));
    assertEquals(0, run("convert", npy.toString(), dir.resolve("c.safetensors").toString()), err);
    assertTrue(err.startsWith("note: --experts not given; inferred E = "), err);

    assertEquals(0, run("diff", a.toString(), back.toString()), err);
    assertTrue(out.contains("     all           10       0.000000       1.000000"), out);
    assertTrue(out.contains("tokens with any difference: 0 of 10 (0.000000)"), out);
    assertEquals(0, run("diff", a.toString(), npy.toString()), err); // .npy side: one sample, layer ids 0..1
  }

  @Test
  void diffCountsDifferingRowsAndOverlapPerLayer() throws Exception {
    // 4 tokens, layers 3 and 5, top-2 of 8, [token, layer, k]. B differs from A in: token 0 layer 3 (same
    // set, other order: no difference), token 1 layer 3 (one expert of two), token 2 layer 5 (none shared).
    int[] a = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    int[] b = {1, 0, 2, 3, 0, 4, 2, 3, 0, 1, 6, 7, 0, 1, 2, 3};
    Path pa = dir.resolve("a.safetensors"), pb = dir.resolve("b.safetensors");
    TraceFiles.write(RoutingTrace.builder("m", 8, 2, new int[] {3, 5}, "softmax").addSample(a).build(), pa);
    TraceFiles.write(RoutingTrace.builder("m", 8, 2, new int[] {3, 5}, "softmax").addSample(b).build(), pb);
    assertEquals(0, run("diff", pa.toString(), pb.toString()), err);
    assertEquals("   layer       tokens    rows_differ   mean_overlap\n"
        + "       3            4       0.250000       0.875000\n"
        + "       5            4       0.250000       0.750000\n"
        + "     all            4       0.250000       0.812500\n"
        + "tokens with any difference: 2 of 4 (0.500000)\n", out.substring(out.indexOf("   layer")));
  }

  @Test
  void badFilesGiveOneLineErrors() throws Exception {
    Path bad = dir.resolve("bad.safetensors");
    Files.write(bad, new byte[] {1, 2, 3});
    assertEquals(1, run("inspect", bad.toString()));
    assertEquals("moe-router: error: " + bad + ": truncated: 3 bytes is too short for a safetensors header length\n", err);
    assertEquals(1, run("inspect", dir.resolve("missing.safetensors").toString()));
    assertEquals("moe-router: error: " + dir.resolve("missing.safetensors") + ": no such file\n", err);
    Path badNpy = dir.resolve("x.npy");
    Files.write(badNpy, "not numpy at all".getBytes());
    assertEquals(1, run("convert", badNpy.toString(), dir.resolve("y.safetensors").toString()));
    assertEquals("moe-router: error: " + badNpy + ": not a .npy file (bad magic string)\n", err);
    assertEquals(2, run("convert", "a.txt", "b.txt"));
    assertEquals(2, run("frobnicate"));
    assertEquals(2, run());
    assertEquals(2, run("convert", "a.npy", "b.safetensors", "--experts", "x"));
    assertFalse(err.contains("\tat "), "no stack traces");
  }

  @Test
  void convertFromAndToTheLayoutsOfOtherSystems() throws Exception {
    // slime's per-sample arrays in an .npz (np.savez(path, *rollout_routed_experts)), dense layer 0 all zero.
    int[] a0 = {0, 0, 3, 4, 0, 0, 5, 6}, a1 = {0, 0, 1, 2};
    java.util.Map<String, Npy.Array> arrays = new java.util.LinkedHashMap<>();
    arrays.put("arr_0", new Npy.Array(Npy.Dtype.I4, new long[] {2, 2, 2}, a0));
    arrays.put("arr_1", new Npy.Array(Npy.Dtype.I4, new long[] {1, 2, 2}, a1));
    Path npz = dir.resolve("slime.npz");
    Npy.writeNpz(npz, arrays);
    Path trace = dir.resolve("t.safetensors");
    assertEquals(0, run("convert", "--from", "slime", npz.toString(), trace.toString(), "--experts", "8", "--model", "glm"), err);
    assertTrue(err.contains("note: slime: 1 of 2 layer columns are all zero (dense layers), kept MoE layers [1]"), err);
    assertTrue(err.contains("note: slime: 2 rows kept as mask 0 (route live): 2 alignment (one per sample)"), err);
    assertEquals(0, run("inspect", trace.toString()), err);
    assertTrue(out.contains("format:         moe-router-trace v2"), out);
    assertTrue(out.contains("mask:           2 of 5 tokens not recorded (route live)"), out);
    assertTrue(out.contains("layers:         1 [1]"), out);

    Path back = dir.resolve("back.npz");
    assertEquals(0, run("convert", "--to", "slime", trace.toString(), back.toString(), "--num-layers", "2"), err);
    assertEquals("wrote " + back + " (slime): 2 int32 arrays [len(tokens) - 1, 2, 2]\n", out);
    Map<String, Npy.Array> read = Npy.readNpz(back);
    assertArrayEquals(a0, (int[]) read.get("arr_0").data());
    assertArrayEquals(a1, (int[]) read.get("arr_1").data());

    Path verl = dir.resolve("verl.safetensors");
    assertEquals(0, run("convert", "--to", "verl", trace.toString(), verl.toString()), err);
    assertEquals(0, run("inspect", verl.toString()), err);
    assertTrue(out.contains("safetensors written by another tool"), out);
    assertTrue(out.contains("tensor routed_experts I32 [2, 3, 2, 2]"), out);
    assertTrue(out.contains("checksum:       none"), out);
    assertEquals(0, run("convert", "--from", "verl", verl.toString(), dir.resolve("v.safetensors").toString()), err);
    assertTrue(TraceFiles.read(dir.resolve("v.safetensors")).contentEquals(TraceFiles.read(trace)));
    assertEquals(1, run("convert", "--to", "megatron", trace.toString(), dir.resolve("m.npy").toString()));
    assertEquals("moe-router: error: megatron has no per-token mask: sample 0 token 2 was not recorded (mask 0);"
        + " to write it anyway choose --masked-rows minus-one, arange or zeros (MaskedRows)\n", err);
    assertFalse(Files.exists(dir.resolve("m.npy")), "nothing written");
    assertEquals(0, run("convert", "--to", "megatron", trace.toString(), dir.resolve("m.npy").toString(), "--masked-rows", "arange"), err);
    assertEquals(Npy.Dtype.I8, Npy.read(dir.resolve("m.npy")).dtype());

    assertEquals(2, run("convert", trace.toString(), dir.resolve("x.npy").toString(), "--num-layers", "3"));
    assertTrue(err.contains("--num-layers and --masked-rows need --to LAYOUT"), err);
    assertEquals(2, run("convert", "--from", "sglang", npz.toString(), trace.toString()));
    assertTrue(err.contains("unknown layout 'sglang' (slime, miles, verl, megatron)"), err);
    assertEquals(2, run("convert", "--from", "slime", npz.toString(), trace.toString(), "--minus-one-rows", "maybe"));
  }

  @Test
  void inspectSaysWhenATraceHasNoChecksum() throws Exception {
    RoutingTrace t = TraceTestSupport.random(8, 64, 4, new int[] {3, 5}, new int[] {6, 4});
    Path a = dir.resolve("a.safetensors");
    TraceFiles.write(t, a);
    byte[] good = Files.readAllBytes(a);
    Files.write(a, TraceTestSupport.rewriteHeader(good, h -> h.replaceAll(",\"checksum\":\"crc32:[0-9a-f]{8}\"", "")));
    assertEquals(0, run("inspect", a.toString()), err);
    assertTrue(out.contains("checksum:       none (written by another tool; allowed, indices verified)"), out);
  }
}
