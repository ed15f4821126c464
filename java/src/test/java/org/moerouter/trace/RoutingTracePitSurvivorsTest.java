// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.MoeRouterException;
import org.moerouter.Status;
import org.moerouter.TestData;
import org.moerouter.replay.LayerKey;
import org.moerouter.replay.LayerKind;

/**
 * {@link RoutingTrace} and its builder at the limits PIT found untested (docs/testing.md, "org.moerouter.trace
 * after the trace survivor tests"): every accessor's argument check on both sides (a wrong argument is an
 * INVALID_ARGUMENT naming it, never an index exception or a silent read of another row), the error text of a
 * bad index in a mapped file (sample, token and layer counted across empty samples and from a non-zero first
 * token or layer), content comparison across chunks and views, MTP layers through the builder, select and merge.
 */
class RoutingTracePitSurvivorsTest {
  @TempDir Path dir;

  /** E = 5, k = 2, layers 3 and 7; samples of 2, 0 and 3 tokens; no mask. Row r of layer l is {(r + l) % 5, (r + l + 1) % 5}. */
  static RoutingTrace small() {
    RoutingTrace.Builder b = RoutingTrace.builder("m", 5, 2, new int[] {3, 7}, "softmax");
    int row = 0;
    for (int tokens : new int[] {2, 0, 3}) {
      int[] idx = new int[tokens * 4];
      for (int t = 0; t < tokens; t++, row++)
        for (int l = 0; l < 2; l++) {
          idx[t * 4 + l * 2] = (row + l) % 5;
          idx[t * 4 + l * 2 + 1] = (row + l + 1) % 5;
        }
      b.addSample(idx);
    }
    return b.build();
  }

  static void invalid(String message, Executable call) {
    MoeRouterException e = assertThrows(MoeRouterException.class, call);
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertEquals(message, e.getMessage());
  }

  @Test
  void layerAndSampleArgumentsAreCheckedOnBothSides() {
    RoutingTrace t = small();
    assertEquals(7, t.layerId(1));
    assertEquals(LayerKind.DECODER, t.layerKind(1));
    invalid("layer range [2, 3) outside [0, 2)", () -> t.layerId(2));
    invalid("layer range [-1, 0) outside [0, 2)", () -> t.layerId(-1));
    invalid("layer range [2, 3) outside [0, 2)", () -> t.layerKind(2));
    invalid("layer range [-1, 0) outside [0, 2)", () -> t.layerKind(-1));

    assertEquals(0, t.sampleOffset(0));
    assertEquals(2, t.sampleOffset(2));
    assertEquals(5, t.sampleOffset(3));
    invalid("sample offset 4 outside [0, 3]", () -> t.sampleOffset(4));
    invalid("sample offset -1 outside [0, 3]", () -> t.sampleOffset(-1));

    assertEquals(3, t.sampleTokens(2));
    invalid("sample 3 outside [0, 3)", () -> t.sampleTokens(3));
    invalid("sample -1 outside [0, 3)", () -> t.sampleTokens(-1));
    invalid("sample 3 outside [0, 3)", () -> t.sample(3));
    invalid("sample 3 outside [0, 3)", () -> t.sampleMask(3));
    invalid("sample -1 outside [0, 3)", () -> t.sampleMask(-1));
    invalid("sample 3 outside [0, 3)", () -> t.copySample(3, 0, 2, new int[100], 0));
    invalid("sample -1 outside [0, 3)", () -> t.copySample(-1, 0, 2, new int[100], 0));
    assertFalse(t.isMapped());
  }

  @Test
  void recordedChecksTheTokenAgainstItsOwnSample() {
    RoutingTrace t = small();
    assertTrue(t.recorded(2, 0));
    assertTrue(t.recorded(2, 2));
    invalid("token 3 outside sample 2 ([0, 3))", () -> t.recorded(2, 3));
    invalid("token -1 outside sample 2 ([0, 3))", () -> t.recorded(2, -1));
    invalid("token 0 outside sample 1 ([0, 0))", () -> t.recorded(1, 0));
    invalid("sample 3 outside [0, 3)", () -> t.recorded(3, 0));
    RoutingTrace m = RoutingTrace.builder("m", 5, 2, new int[] {3, 7}, "softmax")
        .addSample(new int[] {0, 1, 0, 1, 2, 3, 2, 3}, new byte[] {1, 0}).build();
    assertTrue(m.recorded(0, 0));
    assertFalse(m.recorded(0, 1));
    invalid("sample 1 outside [0, 1)", () -> m.recorded(1, 0));
    invalid("sample -1 outside [0, 1)", () -> m.recorded(-1, 0));
  }

  @Test
  void copyMaskRangesAndDestinationAreExact() {
    RoutingTrace m = RoutingTrace.builder("m", 5, 2, new int[] {3, 7}, "softmax")
        .addSample(new int[] {0, 1, 0, 1, 2, 3, 2, 3}, new byte[] {1, 0})
        .addSample(new int[] {4, 1, 4, 1, 2, 0, 2, 0, 1, 2, 1, 2}, new byte[] {0, 1, 1}).build();
    byte[] all = new byte[5];
    assertEquals(5, m.copyMask(0, 5, all, 0));
    assertArrayEquals(new byte[] {1, 0, 0, 1, 1}, all);
    assertEquals(0, m.copyMask(5, 5, all, 5));
    assertEquals(0, m.copyMask(0, 0, new byte[0], 0));
    byte[] dst = {9, 9, 9, 9};
    assertEquals(2, m.copyMask(1, 3, dst, 2));
    assertArrayEquals(new byte[] {9, 9, 0, 0}, dst);
    invalid("dst holds 4 bytes from 3, needs 2", () -> m.copyMask(1, 3, dst, 3));
    invalid("dst holds 4 bytes from -1, needs 2", () -> m.copyMask(1, 3, dst, -1));
    invalid("token range [0, 6) outside [0, 5)", () -> m.copyMask(0, 6, new byte[9], 0));
    invalid("token range [-1, 2) outside [0, 5)", () -> m.copyMask(-1, 2, new byte[9], 0));
    invalid("token range [3, 2) outside [0, 5)", () -> m.copyMask(3, 2, new byte[9], 0));
    assertEquals(2, m.maskedTokens());
    assertArrayEquals(new byte[] {0, 1, 1}, m.sampleMask(1));
  }

  @Test
  void expertChecksEveryArgumentAgainstTheRightBound() {
    RoutingTrace t = small();
    // global row 2 + token 2 = 4, layer 7 (position 1): {(4 + 1) % 5, (4 + 2) % 5}
    assertEquals(0, t.expert(2, 2, 1, 0));
    assertEquals(1, t.expert(2, 2, 1, 1));
    assertEquals(2, t.expert(2, 0, 0, 0));
    invalid("token 3 outside sample 2 ([0, 3))", () -> t.expert(2, 3, 0, 0));
    invalid("token -1 outside sample 2 ([0, 3))", () -> t.expert(2, -1, 0, 0));
    invalid("sample 3 outside [0, 3)", () -> t.expert(3, 0, 0, 0));
    invalid("layer range [2, 3) outside [0, 2)", () -> t.expert(0, 0, 2, 0));
    invalid("slot 2 outside [0, 2)", () -> t.expert(0, 0, 0, 2));
    invalid("slot -1 outside [0, 2)", () -> t.expert(0, 0, 0, -1));
  }

  @Test
  void copyTokensChecksItsRangesAndWritesExactlyTheRowsAsked() {
    RoutingTrace t = small();
    int[] dst = new int[6];
    Arrays.fill(dst, -7);
    assertEquals(4, t.copyTokens(3, 5, 1, 2, dst, 1));
    assertArrayEquals(new int[] {-7, 4, 0, 0, 1, -7}, dst);
    assertEquals(0, t.copyTokens(1, 1, 0, 2, new int[0], 0));
    assertEquals(0, t.copyTokens(0, 2, 1, 1, new int[0], 0));
    invalid("layer range [0, 3) outside [0, 2)", () -> t.copyTokens(0, 1, 0, 3, new int[100], 0));
    invalid("layer range [2, 1) outside [0, 2)", () -> t.copyTokens(0, 1, 2, 1, new int[100], 0));
    invalid("dst holds 6 ints from 3, needs 4", () -> t.copyTokens(3, 5, 1, 2, dst, 3));
    invalid("token range [4, 6) outside [0, 5)", () -> t.copyTokens(4, 6, 0, 1, new int[100], 0));
  }

  @Test
  void slicesAtTheEndsAreValid() {
    RoutingTrace t = small();
    assertEquals(0, t.slice(0, 0).samples());
    assertEquals(0, t.slice(3, 3).samples());
    assertEquals(0, t.slice(1, 1).totalTokens());
    assertTrue(t.slice(0, 3).contentEquals(t));
    invalid("sample range [0, 4) outside [0, 3]", () -> t.slice(0, 4));
    invalid("sample range [-1, 1) outside [0, 3]", () -> t.slice(-1, 1));
    invalid("sample range [2, 1) outside [0, 3]", () -> t.slice(2, 1));
  }

  /** A file-backed copy of {@link #small()} with byte {@code value} at (global token, layer position, slot). */
  Path fileWith(RoutingTrace t, String name, long token, int layer, int slot, int value) throws Exception {
    Path p = dir.resolve(name);
    TraceFiles.write(t, p);
    byte[] f = Files.readAllBytes(p);
    int at = TraceTestSupport.dataStart(f) + (t.samples() + 1) * 8 + (int) ((token * t.layers() + layer) * t.topK() + slot);
    f[at] = (byte) value;
    Files.write(p, f);
    return p;
  }

  @Test
  void aMappedIndexEqualToENamesItsSampleTokenAndLayer() throws Exception {
    RoutingTrace t = small();
    // global token 2 is sample 2 token 0 (sample 1 is empty): an exact hit on two equal offsets
    Path p = fileWith(t, "e.safetensors", 2, 1, 1, 5);
    RoutingTrace m = TraceFiles.open(p);
    assertTrue(m.isMapped());
    String where = p + ": sample 2 token 0 layer 7: expert 5 out of range [0, 5)";
    assertEquals(where, assertThrows(TraceFormatException.class, () -> m.expert(2, 0, 1, 1)).getMessage());
    assertEquals(where, assertThrows(TraceFormatException.class, () -> m.copyTokens(1, 4, 1, 2, new int[6], 0)).getMessage());
    assertEquals(where, assertThrows(TraceFormatException.class, () -> m.sample(2)).getMessage());
    // the rows around it are read as written, and a copy that ends before it reads no further
    assertEquals(t.expert(2, 0, 1, 0), m.expert(2, 0, 1, 0));
    // verify (TraceFiles.read) names the same row once the checksum matches the changed byte
    Files.write(p, TraceTestSupport.resign(Files.readAllBytes(p)));
    assertEquals(where, assertThrows(TraceFormatException.class, () -> TraceFiles.read(p)).getMessage());
    int[] dst = new int[8];
    Arrays.fill(dst, 99);
    assertEquals(4, m.copyTokens(0, 2, 0, 1, dst, 0));
    assertArrayEquals(new int[] {0, 1, 1, 2, 99, 99, 99, 99}, dst);

    // token 0 of the trace: binary search finds offset 0 exactly
    RoutingTrace m0 = TraceFiles.open(fileWith(t, "e0.safetensors", 0, 0, 0, 200));
    assertEquals(m0.path() + ": sample 0 token 0 layer 3: expert 200 out of range [0, 5)",
        assertThrows(TraceFormatException.class, () -> m0.copyTokens(0, 1, 0, 2, new int[4], 0)).getMessage());
    // the last token, counted from a non-zero first token and layer
    RoutingTrace m4 = TraceFiles.open(fileWith(t, "e4.safetensors", 4, 1, 0, 6));
    assertEquals(m4.path() + ": sample 2 token 2 layer 7: expert 6 out of range [0, 5)",
        assertThrows(TraceFormatException.class, () -> m4.copyTokens(3, 5, 1, 2, new int[4], 0)).getMessage());
  }

  @Test
  void verifyNamesDuplicatesByTheirSampleAndSkipsUnrecordedRows() throws Exception {
    RoutingTrace t = small();
    // sample 2 token 0 (global 2, just after the empty sample 1), layer 3: {2, 3} becomes {3, 3}
    Path p = fileWith(t, "dup.safetensors", 2, 0, 0, 3);
    byte[] f = TraceTestSupport.resign(Files.readAllBytes(p));
    Files.write(p, f);
    assertEquals(p + ": sample 2 token 0 layer 3: expert 3 appears twice in the top-2 set",
        assertThrows(TraceFormatException.class, () -> TraceFiles.read(p)).getMessage());

    // the same duplicate in a row with mask 0 is a placeholder, not routing
    RoutingTrace masked = RoutingTrace.builder("m", 5, 2, new int[] {3, 7}, "softmax")
        .addSample(new int[] {0, 1, 0, 1, 2, 3, 2, 3}, new byte[] {1, 0}).build();
    Path q = fileWith(masked, "dupmasked.safetensors", 1, 0, 0, 1);
    Files.write(q, TraceTestSupport.resign(Files.readAllBytes(q)));
    RoutingTrace r = TraceFiles.read(q);
    assertEquals(1, r.expert(0, 1, 0, 0));
    assertEquals(1, r.expert(0, 1, 0, 1));
    // ... and a recorded row with it is rejected
    Path q2 = fileWith(masked, "dupmasked2.safetensors", 0, 1, 1, 0);
    Files.write(q2, TraceTestSupport.resign(Files.readAllBytes(q2)));
    assertEquals(q2 + ": sample 0 token 0 layer 7: expert 0 appears twice in the top-2 set",
        assertThrows(TraceFormatException.class, () -> TraceFiles.read(q2)).getMessage());
  }

  @Test
  void verifyRejectsAMaskByteOtherThanZeroOrOne() throws Exception {
    RoutingTrace masked = RoutingTrace.builder("m", 5, 2, new int[] {3, 7}, "softmax")
        .addSample(new int[] {0, 1, 0, 1, 2, 3, 2, 3, 3, 4, 3, 4}, new byte[] {1, 0, 1}).build();
    Path p = dir.resolve("mask.safetensors");
    TraceFiles.write(masked, p);
    byte[] f = Files.readAllBytes(p);
    f[f.length - 1] = 2; // the mask is the last tensor: global token 2
    Files.write(p, TraceTestSupport.resign(f));
    assertEquals(p + ": mask of global token 2 is 2, expected 0 or 1",
        assertThrows(TraceFormatException.class, () -> TraceFiles.read(p)).getMessage());
  }

  @Test
  void toStringSaysWhatTheTraceHolds() throws Exception {
    RoutingTrace t = small();
    assertEquals("RoutingTrace{model=m, experts=5, topK=2, layers=2, samples=3, tokens=5, U8}", t.toString());
    RoutingTrace mtp = RoutingTrace.builder("q", 300, 1, new LayerKey[] {LayerKey.decoder(0), LayerKey.mtp(0)}, "sigmoid")
        .addSample(new int[] {299, 7}, new byte[] {0}).build();
    assertEquals("RoutingTrace{model=q, experts=300, topK=1, layers=2 (1 MTP), samples=1, tokens=1, U16, masked}", mtp.toString());
    Path p = dir.resolve("s.safetensors");
    TraceFiles.write(t, p);
    assertEquals("RoutingTrace{model=m, experts=5, topK=2, layers=2, samples=3, tokens=5, U8, mapped}", TraceFiles.open(p).toString());
  }

  /** 32 layers, k = 8: a row of 256 indices, so contentEquals compares in chunks of 256 tokens. */
  static RoutingTrace wide(long seed, int... tokens) {
    int[] ids = new int[32];
    for (int i = 0; i < 32; i++) ids[i] = i;
    return TraceTestSupport.random(seed, 16, 8, ids, tokens);
  }

  @Test
  void contentEqualsComparesEveryChunkOfTokensAndTheMasks() throws Exception {
    RoutingTrace a = wide(5, 300, 400, 200);
    assertTrue(a.contentEquals(a));
    assertFalse(a.contentEquals(null));
    Path p = dir.resolve("wide.safetensors");
    TraceFiles.write(a, p);
    RoutingTrace mapped = TraceFiles.open(p);
    assertTrue(a.contentEquals(mapped));
    assertTrue(mapped.contentEquals(a));
    // views: a later slice against its own copy, through every chunk
    assertTrue(a.slice(1, 3).contentEquals(a.select(new int[] {1, 2}, 0, 32)));
    assertTrue(mapped.slice(1, 3).contentEquals(a.slice(1, 3)));
    // one index of the third chunk differs: global token 600, layer 31, slot 7
    int[] s1 = a.sample(1);
    int row = (600 - 300) * 256 + 31 * 8;
    int[] r = Arrays.copyOfRange(s1, row, row + 8);
    int free = 0;
    while (contains(r, free)) free++;
    s1[row + 7] = free;
    RoutingTrace b = RoutingTrace.builder("test-model", 16, 8, a.layerIds(), "softmax")
        .addSample(a.sample(0)).addSample(s1).addSample(a.sample(2)).build();
    assertFalse(a.contentEquals(b));
    assertFalse(b.contentEquals(mapped));
    assertFalse(a.slice(1, 2).contentEquals(b.slice(1, 2)));
    assertTrue(a.slice(2, 3).contentEquals(b.slice(2, 3)));

    // same indices, one row unrecorded (its placeholder 0 .. k-1 equals the recorded row)
    int[] idx = {0, 1, 2, 3};
    RoutingTrace rec = RoutingTrace.builder("m", 4, 2, new int[] {0}, "softmax").addSample(idx, new byte[] {1, 1}).build();
    RoutingTrace unrec = RoutingTrace.builder("m", 4, 2, new int[] {0}, "softmax").addSample(idx, new byte[] {0, 1}).build();
    assertArrayEquals(rec.sample(0), unrec.sample(0));
    assertFalse(rec.contentEquals(unrec));
    assertFalse(unrec.contentEquals(rec));
  }

  static boolean contains(int[] a, int v) {
    for (int x : a) if (x == v) return true;
    return false;
  }

  @Test
  void writingAMiddleSliceWritesOnlyItsRows() throws Exception {
    RoutingTrace a = wide(9, 3, 5, 4);
    RoutingTrace mid = a.slice(1, 2);
    Path p = dir.resolve("mid.safetensors");
    TraceFiles.write(mid, p);
    RoutingTrace back = TraceFiles.read(p);
    assertTrue(back.contentEquals(mid));
    assertEquals(5, back.totalTokens());
    assertArrayEquals(a.sample(1), back.sample(0));
  }

  @Test
  void selectChecksItsLayerRangeAndKeepsKindsAndMask() {
    RoutingTrace t = RoutingTrace.builder("m", 6, 2, new LayerKey[] {LayerKey.decoder(3), LayerKey.decoder(7), LayerKey.mtp(0)}, "s")
        .addSample(new int[] {0, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 0}, new byte[] {1, 0}).build();
    invalid("layer range [2, 1) outside [0, 3)", () -> t.select(new int[] {0}, 2, 1));
    invalid("layer range [0, 4) outside [0, 3)", () -> t.select(new int[0], 0, 4));
    invalid("a trace needs at least one layer", () -> t.select(new int[] {0}, 1, 1));
    RoutingTrace dec = t.select(new int[] {0}, 0, 2);
    assertEquals(0, dec.mtpLayers());
    assertArrayEquals(new LayerKey[] {LayerKey.decoder(3), LayerKey.decoder(7)}, dec.layerKeys());
    assertTrue(dec.hasMask());
    assertArrayEquals(new byte[] {1, 0}, dec.sampleMask(0));
    assertArrayEquals(new int[] {0, 1, 2, 3, 0, 1, 0, 1}, dec.sample(0));
    RoutingTrace tail = t.select(new int[] {0, 0}, 1, 3);
    assertEquals(1, tail.mtpLayers());
    assertArrayEquals(new LayerKey[] {LayerKey.decoder(7), LayerKey.mtp(0)}, tail.layerKeys());
    assertArrayEquals(new byte[] {1, 0, 1, 0}, concat(tail.sampleMask(0), tail.sampleMask(1)));
    RoutingTrace mtpOnly = t.select(new int[] {0}, 2, 3);
    assertEquals(1, mtpOnly.mtpLayers());
    assertEquals(LayerKind.MTP, mtpOnly.layerKind(0));
  }

  static byte[] concat(byte[] a, byte[] b) {
    byte[] out = Arrays.copyOf(a, a.length + b.length);
    System.arraycopy(b, 0, out, a.length, b.length);
    return out;
  }

  @Test
  void builderLayerKindsAndRepeats() {
    RoutingTrace allMtp = RoutingTrace.builder("m", 4, 1, new LayerKey[] {LayerKey.mtp(0), LayerKey.mtp(1)}, "s").build();
    assertEquals(2, allMtp.mtpLayers());
    assertEquals(LayerKind.MTP, allMtp.layerKind(0));
    // the same number in both kinds is two layers
    RoutingTrace both = RoutingTrace.builder("m", 4, 1,
        new LayerKey[] {LayerKey.decoder(0), LayerKey.decoder(1), LayerKey.mtp(1), LayerKey.mtp(0)}, "s").build();
    assertEquals(2, both.layerIndex(LayerKey.mtp(1)));
    assertEquals(1, both.layerIndex(LayerKey.decoder(1)));
    RoutingTrace.builder("m", 4, 1, new LayerKey[] {LayerKey.decoder(5), LayerKey.mtp(5), LayerKey.mtp(6)}, "s").build();
    invalid("MTP layer id 0 repeated",
        () -> RoutingTrace.builder("m", 4, 1, new LayerKey[] {LayerKey.decoder(5), LayerKey.mtp(0), LayerKey.mtp(0)}, "s"));
    invalid("MTP layer id 0 repeated", () -> RoutingTrace.builder("m", 4, 1, new LayerKey[] {LayerKey.mtp(0), LayerKey.mtp(0)}, "s"));
    invalid("layer id 5 repeated",
        () -> RoutingTrace.builder("m", 4, 1, new LayerKey[] {LayerKey.decoder(5), LayerKey.decoder(5), LayerKey.mtp(5)}, "s"));
    invalid("mtp layers 3 outside [0, 2]", () -> new RoutingTrace.Builder("m", 4, 1, new int[] {0, 1}, 3, "s"));
    invalid("mtp layers -1 outside [0, 2]", () -> new RoutingTrace.Builder("m", 4, 1, new int[] {0, 1}, -1, "s"));
  }

  @Test
  void builderNamesMtpLayersAndMaskEntriesInItsErrors() {
    RoutingTrace.Builder b = RoutingTrace.builder("m", 4, 2, new LayerKey[] {LayerKey.decoder(9), LayerKey.mtp(0)}, "s");
    invalid("sample 0 token 0 layer mtp 0: expert 3 appears twice in the top-2 set", () -> b.addSample(new int[] {0, 1, 3, 3}));
    invalid("sample 0 token 0 layer 9: expert 4 out of range [0, 4)", () -> b.addSample(new int[] {0, 4, 1, 2}));
    assertEquals(0, b.samples());
    b.addSample(new int[] {0, 1, 2, 3});
    assertEquals(1, b.samples());
    // the mask from an offset: token 1's entry is mask[2]
    invalid("sample 1 token 1: mask 2 is not 0 or 1",
        () -> b.addSample(new int[] {0, 1, 2, 3, 0, 1, 2, 3}, 0, 2, new byte[] {1, 1, 2}, 1));
    invalid("sample 1: 2 tokens from offset 4 need 8 indices, the array has 8", () -> b.addSample(new int[8], 4, 2));
    invalid("sample 1: mask holds 3 entries from 2, needs 2", () -> b.addSample(new int[8], 0, 2, new byte[3], 2));
    assertEquals(1, b.samples());
  }

  @Test
  void aMaskOfExactlyTheSampleLengthAndAMaskThatGrows() {
    RoutingTrace.Builder b = RoutingTrace.builder("m", 4, 2, new int[] {0}, "s");
    b.addSample(new int[] {0, 1, 2, 3}, new byte[] {1, 1});
    assertFalse(b.build().hasMask());
    b.addSample(new int[] {1, 2, 2, 3}, new byte[] {0, 1});
    // a long sample without a mask after the mask was created: the mask grows past its first 64 entries
    Random r = new Random(3);
    // (200 rows at once: more than twice the first 64, so the growth must follow the rows, not the capacity)
    int[] big = TestData.randomSelection(r, 200, 2, 4);
    b.addSample(big);
    b.addSample(new int[] {3, 0}, new byte[] {0});
    RoutingTrace t = b.build();
    assertTrue(t.hasMask());
    assertEquals(205, t.totalTokens());
    byte[] m = new byte[205];
    t.copyMask(0, 205, m, 0);
    byte[] want = new byte[205];
    Arrays.fill(want, (byte) 1);
    want[2] = 0;
    want[204] = 0;
    assertArrayEquals(want, m);
    assertArrayEquals(big, t.sample(2));
    assertArrayEquals(new int[] {0, 1}, t.sample(3));
  }

  @Test
  void addSamplesMergesMasksAndRefusesOtherShapes() {
    RoutingTrace.Builder src = RoutingTrace.builder("m", 5, 2, new int[] {3, 7}, "softmax");
    src.addSample(new int[] {0, 1, 2, 3}, new byte[] {0});
    src.addSample(new int[] {4, 1, 2, 0, 1, 2, 3, 4});
    RoutingTrace masked = src.build();
    RoutingTrace.Builder b = RoutingTrace.builder("other", 5, 2, new int[] {3, 7}, "softmax");
    assertSame(b, b.addSamples(small()));
    assertSame(b, b.addSamples(masked));
    RoutingTrace t = b.build();
    assertEquals(5, t.samples());
    assertArrayEquals(new byte[] {0}, t.sampleMask(3));
    assertArrayEquals(new byte[] {1, 1}, t.sampleMask(4));
    assertArrayEquals(small().sample(2), t.sample(2));
    assertArrayEquals(masked.sample(1), t.sample(4));
    assertArrayEquals(new byte[] {1, 1, 1}, t.sampleMask(2));
    assertEquals(0, b.addSamples(small().slice(0, 0)).samples() - 5);

    String[] bad = {
      "cannot merge RoutingTrace{model=m, experts=6, topK=2, layers=2, samples=0, tokens=0, U8}: E, k or layers differ",
      "cannot merge RoutingTrace{model=m, experts=5, topK=1, layers=2, samples=0, tokens=0, U8}: E, k or layers differ",
      "cannot merge RoutingTrace{model=m, experts=5, topK=2, layers=2, samples=0, tokens=0, U8}: E, k or layers differ",
      "cannot merge RoutingTrace{model=m, experts=5, topK=2, layers=2 (1 MTP), samples=0, tokens=0, U8}: E, k or layers differ",
    };
    RoutingTrace[] others = {
      RoutingTrace.builder("m", 6, 2, new int[] {3, 7}, "softmax").build(),
      RoutingTrace.builder("m", 5, 1, new int[] {3, 7}, "softmax").build(),
      RoutingTrace.builder("m", 5, 2, new int[] {3, 8}, "softmax").build(),
      RoutingTrace.builder("m", 5, 2, new LayerKey[] {LayerKey.decoder(3), LayerKey.mtp(7)}, "softmax").build(),
    };
    for (int i = 0; i < bad.length; i++) {
      RoutingTrace o = others[i];
      invalid(bad[i], () -> b.addSamples(o));
    }
    assertEquals(5, b.samples());
    assertNull(small().path());
  }
}
