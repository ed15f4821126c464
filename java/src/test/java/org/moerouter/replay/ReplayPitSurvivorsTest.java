// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.List;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.LongPointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.moerouter.Backend;
import org.moerouter.HostDeviceRouter;
import org.moerouter.LogitsType;
import org.moerouter.MinusOneRows;
import org.moerouter.MoeRouter;
import org.moerouter.MoeRouterException;
import org.moerouter.NonFinitePolicy;
import org.moerouter.RouterConfig;
import org.moerouter.RoutingResult;
import org.moerouter.Status;

/**
 * The replay bookkeeping that PIT's run on org.moerouter.replay showed no test pinned down (docs/testing.md,
 * "org.moerouter.replay after the replay survivor tests"): sizes and shapes at their limits (one expert,
 * k = E, zero tokens, an empty shape), stacked keys that are unknown or repeated, zero-row record buffers,
 * going back from a caller's or a device buffer to the layer's own, more than 16 rows of -1 routed live,
 * ARANGE under a mask, the bf16 overload's return value, and the device paths: their argument checks and,
 * through {@link HostDeviceRouter} (device addresses that are host memory), which pointers and offsets each
 * action hands the router and what the layer records and pops.
 */
class ReplayPitSurvivorsTest {
  static final int E = 8, K = 2, T = 5;
  static final RouterConfig CONFIG = RouterConfig.builder(E, K).build();
  static final LayerKey L0 = LayerKey.decoder(0), L1 = LayerKey.decoder(1);

  static float[] logits(int tokens, int seed) {
    float[] l = new float[tokens * E];
    for (int i = 0; i < l.length; i++) l[i] = ((i * 7 + seed * 13) % 17) * 0.25f - (i % 3) * 0.125f;
    return l;
  }

  static int[] target(int tokens, int seed) {
    int[] idx = new int[tokens * K];
    for (int t = 0; t < tokens; t++) {
      idx[t * K] = (seed + t) % E;
      idx[t * K + 1] = (seed + 2 * t + 3) % E;
      if (idx[t * K + 1] == idx[t * K]) idx[t * K + 1] = (idx[t * K] + 1) % E;
    }
    return idx;
  }

  static ReplayRegistry twoLayers() {
    ReplayRegistry reg = new ReplayRegistry();
    reg.addLayer(L0, CONFIG);
    reg.addLayer(L1, CONFIG);
    return reg;
  }

  /**
   * The layer's forward replay (its action set to REPLAY_FORWARD) gives what the router's own replay of
   * {@code want} gives; returns the indices the layer wrote.
   */
  static int[] assertLayerReplays(RouterReplay l, float[] lg, int tokens, int[] want, byte[] mask) {
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.JAVA)) {
      RoutingResult expected = r.replay(lg, tokens, want, mask);
      int[] got = new int[tokens * K];
      float[] w = new float[tokens * K];
      l.route(r, lg, tokens, got, w);
      assertArrayEquals(expected.indices(), got);
      assertArrayEquals(expected.weights(), w);
      return got;
    }
  }

  // ------------------------------------------------------------------ sizes and shapes at their limits

  @Test
  void layerSizesAreCheckedAtTheirExactLimits() {
    ReplayRegistry reg = new ReplayRegistry();
    RouterReplay one = reg.addLayer(LayerKey.decoder(0), 1, 1);  // one expert, top-1: the smallest layer
    one.setTargetIndices(new int[] {0, 0, 0}, 3);
    ReplayStateException bad = assertThrows(ReplayStateException.class, () -> one.setTargetIndices(new int[] {0, 1}, 2));
    assertEquals("decoder layer 0: target row 1: expert 1 at position 0 is out of range [0, 1)", bad.getMessage());
    RouterReplay all = reg.addLayer(LayerKey.decoder(1), 4, 4);  // k = E: every expert in every row
    all.setTargetIndices(new int[] {3, 2, 1, 0}, 1);
    assertEquals(1, all.targetTokens());
    for (int[] ek : new int[][] {{0, 1}, {4, 0}, {4, 5}, {-1, 1}}) {
      MoeRouterException e = assertThrows(MoeRouterException.class, () -> reg.addLayer(LayerKey.decoder(2), ek[0], ek[1]));
      assertEquals(Status.INVALID_ARGUMENT, e.status());
      assertEquals("decoder layer 2: need 1 <= topK <= experts, got topK " + ek[1] + " of " + ek[0], e.getMessage());
    }
    assertFalse(reg.hasLayer(LayerKey.decoder(2)), "a rejected layer is not registered");
  }

  @Test
  void zeroTokenTargetsAreValidInEveryOverload() {
    ReplayRegistry reg = twoLayers();
    RouterReplay l = reg.layer(L0);
    l.setTargetIndices(new int[0], 0);
    assertEquals(0, l.targetTokens());
    l.setTargetIndices(new int[0], new long[] {0, K}, null);
    assertEquals(0, l.targetTokens());
    assertEquals(2, l.backwardQueueSize());
    reg.setReplayData(new int[][] {new int[0], new int[0]}, 0, null);
    reg.setReplayData(new int[0], new long[] {0, 2, K}, null, new byte[0]);
    for (RouterReplay r : reg.layers()) assertEquals(0, r.targetTokens());
    assertEquals(4, l.backwardQueueSize());
    assertEquals(2, reg.layer(L1).backwardQueueSize());
    // A replay of zero tokens is a valid call that writes nothing and pops one entry.
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.JAVA)) {
      reg.setAction(ReplayAction.REPLAY_FORWARD);
      assertEquals(0, l.route(r, new float[0], 0, new int[0], new float[0]));
      reg.setAction(ReplayAction.REPLAY_BACKWARD);
      assertEquals(0, l.route(r, new float[0], 0, new int[0], new float[0]));
      assertEquals(3, l.backwardQueueSize());
    }
    // Negative counts are still refused.
    assertEquals(Status.INVALID_ARGUMENT, assertThrows(MoeRouterException.class, () -> l.setTargetIndices(new int[0], -1)).status());
    MoeRouterException neg = assertThrows(MoeRouterException.class, () -> reg.setReplayData(new int[][] {{}, {}}, -1, null));
    assertEquals("tokens must be >= 0, got -1", neg.getMessage());
  }

  @Test
  void shapeErrorsNameBothShapesEvenForNoTokensAndNoDimensions() {
    ReplayRegistry reg = twoLayers();
    RouterReplay l = reg.layer(L0);
    ReplayStateException e = assertThrows(ReplayStateException.class, () -> l.setTargetIndices(new int[4], 0));
    assertEquals("decoder layer 0: target indices [0, ?] (4 ints) do not match the layer's [0, 2] (0 tokens, top-2)",
        e.getMessage());
    e = assertThrows(ReplayStateException.class, () -> reg.setReplayData(new int[][] {new int[0], new int[3]}, 0, null));
    assertEquals("decoder layer 1: setReplayData array 1 is [0, ?] (3 ints), the layer needs [0, 2]", e.getMessage());
    assertEquals(L1, e.layer());
    // A 0-d shape describes one value; it is not [T, k].
    e = assertThrows(ReplayStateException.class, () -> l.setTargetIndices(new int[] {1}, new long[0], null));
    assertEquals("decoder layer 0: target indices [] do not match the layer's [0, 2] (tokens, top-2)", e.getMessage());
    e = assertThrows(ReplayStateException.class, () -> reg.setReplayData(new int[] {1}, new long[0], null, null));
    assertEquals("setReplayData: stacked indices [] do not match [0, 2, 2] (tokens, 2 layers [decoder layer 0,"
        + " decoder layer 1], top-2)", e.getMessage());
    assertFalse(l.hasTarget());
    assertEquals(0, l.backwardQueueSize());
  }

  @Test
  void aShapeWhoseElementCountWrapsAroundDescribesNoArray() {
    // 2^62 * 4 wraps to 0 in a long: such a shape once passed for an empty array, installing an empty target
    // on a layer (the int cast of 2^62 is 0), or failed in Math.toIntExact for stacked data.
    RouterReplay l = new ReplayRegistry().addLayer(L0, E, 4);
    MoeRouterException e = assertThrows(MoeRouterException.class,
        () -> l.setTargetIndices(new int[0], new long[] {1L << 62, 4}, null));
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertEquals("decoder layer 0: shape [4611686018427387904, 4] does not describe 0 indices", e.getMessage());
    assertFalse(l.hasTarget());
    assertEquals(0, l.backwardQueueSize());
    ReplayRegistry reg = twoLayers();
    e = assertThrows(MoeRouterException.class, () -> reg.setReplayData(new int[0], new long[] {1L << 62, 2, K}, null, null));
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertEquals("shape [4611686018427387904, 2, 2] does not describe 0 indices", e.getMessage());
    e = assertThrows(MoeRouterException.class,
        () -> reg.setReplayData(new int[0], new long[] {1L << 31, 1L << 31, 1L << 31, 1L << 31}, null, null));
    assertEquals(Status.INVALID_ARGUMENT, e.status(), "2^124 wraps to 0 as well");
    // A negative dimension describes nothing, whatever follows it (0 made the product 0 once).
    for (long[] shape : new long[][] {{-1, 0}, {-2, 4}, {0, -4}}) {
      e = assertThrows(MoeRouterException.class, () -> l.setTargetIndices(new int[0], shape, null));
      assertEquals(Status.INVALID_ARGUMENT, e.status(), Arrays.toString(shape));
      assertEquals("decoder layer 0: shape " + Arrays.toString(shape) + " does not describe 0 indices", e.getMessage());
    }
    e = assertThrows(MoeRouterException.class, () -> reg.setReplayData(new int[0], new long[] {-1, 0, K}, null, null));
    assertEquals("shape [-1, 0, 2] does not describe 0 indices", e.getMessage());
    for (RouterReplay r : reg.layers()) assertFalse(r.hasTarget());
    // Zero in any place, after large dimensions too, is an empty array.
    ReplayStateException s = assertThrows(ReplayStateException.class,
        () -> l.setTargetIndices(new int[0], new long[] {1L << 40, 1L << 40, 0}, null));
    assertTrue(s.getMessage().startsWith("decoder layer 0: target indices [1099511627776, 1099511627776, 0] do not match"),
        s.getMessage());
  }

  @Test
  void theShapedSetterInstallsWhatItChecked() {
    RouterReplay l = twoLayers().layer(L0);
    int[] idx = target(T, 3);
    byte[] mask = {1, 0, 1, 1, 0};
    l.setTargetIndices(idx, new long[] {T, K}, mask);
    l.setAction(ReplayAction.REPLAY_FORWARD);
    assertLayerReplays(l, logits(T, 2), T, idx, mask);
  }

  @Test
  void stackedKeysMustBeRegisteredAndDistinctAndNothingChangesOtherwise() {
    ReplayRegistry reg = twoLayers();
    int[] a = target(T, 1), b = target(T, 4);
    int[] stacked = new int[T * 2 * K];
    for (int t = 0; t < T; t++) {
      System.arraycopy(a, t * K, stacked, (t * 2) * K, K);
      System.arraycopy(b, t * K, stacked, (t * 2 + 1) * K, K);
    }
    long[] shape = {T, 2, K};
    MoeRouterException e = assertThrows(MoeRouterException.class,
        () -> reg.setReplayData(stacked, shape, new LayerKey[] {L0, L0}, null));
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertEquals("decoder layer 0 listed twice", e.getMessage());
    e = assertThrows(MoeRouterException.class,
        () -> reg.setReplayData(stacked, shape, new LayerKey[] {L1, LayerKey.mtp(0)}, null));
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertEquals("MTP layer 0 is not registered (layers: [decoder layer 0, decoder layer 1])", e.getMessage());
    for (RouterReplay r : reg.layers()) {
      assertFalse(r.hasTarget(), r.key().toString());
      assertEquals(0, r.backwardQueueSize(), r.key().toString());
    }
    // Swapped keys swap the columns.
    reg.setReplayData(stacked, shape, new LayerKey[] {L1, L0}, null);
    assertEquals(1, reg.layer(L0).backwardQueueSize());
    assertEquals(1, reg.layer(L1).backwardQueueSize());
    reg.setAction(ReplayAction.REPLAY_FORWARD);
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.JAVA)) {
      int[] got0 = new int[T * K], got1 = new int[T * K];
      reg.layer(L0).route(r, logits(T, 1), T, got0, new float[T * K]);
      reg.layer(L1).route(r, logits(T, 1), T, got1, new float[T * K]);
      assertArrayEquals(b, got0);
      assertArrayEquals(a, got1);
    }
  }

  @Test
  void theRegistrysOneLayerSetterSetsThatLayerOnly() {
    ReplayRegistry reg = twoLayers();
    int[] idx = target(T, 5);
    reg.setTargetIndices(L1, idx, T, null);
    assertTrue(reg.layer(L1).hasTarget());
    assertEquals(T, reg.layer(L1).targetTokens());
    assertFalse(reg.layer(L0).hasTarget());
    reg.setAction(ReplayAction.REPLAY_FORWARD);
    float[] lg = logits(T, 4);
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.JAVA)) {
      int[] got = new int[T * K];
      reg.layer(L1).route(r, lg, T, got, new float[T * K]);
      assertArrayEquals(idx, got);
    }
    assertThrows(ReplayStateException.class, () -> reg.setTargetIndices(L0, idx, T + 1, null));
    assertFalse(reg.layer(L0).hasTarget());
  }

  // ------------------------------------------------------------------ recording buffers

  @Test
  void aZeroTokenStaticBufferRecordsZeroTokenCallsAndRefusesAnyOther() {
    ReplayRegistry reg = twoLayers();
    reg.setStaticBuffer(new int[0], 0);  // layer 1's slice starts at offset k of an empty buffer: it holds no rows
    reg.setAction(ReplayAction.RECORD);
    RouterReplay l = reg.layer(L1);
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.JAVA)) {
      assertEquals(0, l.route(r, new float[0], 0, new int[0], new float[0]));
      assertTrue(l.hasRecording());
      assertEquals(0, l.recordedTokens());
      assertArrayEquals(new int[] {0}, l.recordedCallTokens());
      int[] idx = new int[T * K];
      Arrays.fill(idx, -7);
      ReplayStateException e = assertThrows(ReplayStateException.class, () -> l.route(r, logits(T, 1), T, idx, new float[T * K]));
      assertEquals("decoder layer 1: recording buffer holds 0 tokens, 0 recorded, this call routes 5", e.getMessage());
      int[] untouched = new int[T * K];
      Arrays.fill(untouched, -7);
      assertArrayEquals(untouched, idx, "refused before routing");
      // The same for a layer's own zero-row buffer, wherever it starts: zero rows need no room.
      RouterReplay own = reg.layer(L0);
      own.setRecordBuffer(new int[0], 3, K, 0);
      own.setRecordBuffer(new int[4], 9, K + 1, 0);
      own.setRecordBuffer(new int[1]);
      e = assertThrows(ReplayStateException.class, () -> own.route(r, logits(1, 1), 1, new int[K], new float[K]));
      assertEquals("decoder layer 0: recording buffer holds 0 tokens, 0 recorded, this call routes 1", e.getMessage());
    }
    MoeRouterException neg = assertThrows(MoeRouterException.class, () -> reg.setStaticBuffer(new int[0], -1));
    assertEquals("static buffer of 0 ints is not [-1, 2, 2] (max tokens, 2 layers, top-2)", neg.getMessage());
  }

  @Test
  void clearingTheStaticBuffersGoesBackToEachLayersOwnBuffer() {
    ReplayRegistry reg = twoLayers();
    int[] stat = new int[T * 2 * K];
    reg.setStaticBuffer(stat, T);
    reg.setAction(ReplayAction.RECORD);
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.JAVA)) {
      for (RouterReplay l : reg.layers()) l.route(r, logits(T, 1), T, new int[T * K], new float[T * K]);
      int[] before = stat.clone();
      reg.clearStaticBuffers();
      for (RouterReplay l : reg.layers()) {
        assertFalse(l.hasRecording(), l.key() + ": clearing the buffers clears the recording");
        assertEquals(0, l.recordedTokens());
        assertNull(l.recordedIndices());
      }
      // More tokens than the static buffer held: only the layers' own growing buffers take them.
      int[][] got = new int[2][(T + 3) * K];
      for (int i = 0; i < 2; i++) reg.layers().get(i).route(r, logits(T + 3, 9 + i), T + 3, got[i], new float[(T + 3) * K]);
      assertArrayEquals(before, stat, "the static buffer is no longer written");
      int[][] rec = reg.recordedData();
      assertArrayEquals(got[0], rec[0]);
      assertArrayEquals(got[1], rec[1]);
    }
  }

  @Test
  void clearingOneLayersRecordBufferClearsItsRecording() {
    RouterReplay l = twoLayers().layer(L0);
    int[] buf = new int[T * K];
    l.setRecordBuffer(buf);
    l.setAction(ReplayAction.RECORD);
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.JAVA)) {
      int[] first = new int[T * K];
      l.route(r, logits(T, 1), T, first, new float[T * K]);
      assertArrayEquals(first, buf);
      l.clearRecordBuffer();
      assertFalse(l.hasRecording());
      assertEquals(0, l.recordedTokens());
      assertNull(l.recordedIndices());
      assertEquals(0, l.recordedCallTokens().length);
      int[] second = new int[2 * T * K];
      l.route(r, logits(2 * T, 2), 2 * T, second, new float[2 * T * K]);
      assertArrayEquals(first, buf, "the caller's buffer is no longer written");
      assertArrayEquals(second, l.recordedIndices());
    }
  }

  // ------------------------------------------------------------------ rows of -1

  @Test
  void moreThanSixteenPaddingRowsAreAllRoutedLive() {
    int tokens = 40;
    ReplayRegistry reg = ReplayRegistry.builder().minusOneRows(MinusOneRows.LIVE).build();
    RouterReplay l = reg.addLayer(L0, CONFIG);
    int[] idx = target(tokens, 1);
    byte[] liveMask = new byte[tokens];
    Arrays.fill(liveMask, (byte) 1);
    for (int t = 1; t < tokens; t += 2) {  // 20 rows of -1: the list of live rows grows past its first 16
      idx[t * K] = -1;
      idx[t * K + 1] = -1;
      liveMask[t] = 0;
    }
    int[] given = idx.clone();
    l.setTargetIndices(idx, tokens);
    assertArrayEquals(given, idx, "the caller's array is not modified");
    l.setAction(ReplayAction.REPLAY_FORWARD);
    assertLayerReplays(l, logits(tokens, 6), tokens, idx, liveMask);
  }

  @Test
  void arangeRewritesOnlyTheUnmaskedPaddingRows() {
    ReplayRegistry reg = ReplayRegistry.builder().minusOneRows(MinusOneRows.ARANGE).build();
    RouterReplay l = reg.addLayer(L0, CONFIG);
    int[] idx = {5, 6, -1, -1, 7, 1, -1, -1, -1, 4};  // row 1 padding; rows 3 (padding) and 4 (mixed) masked out
    byte[] mask = {1, 1, 1, 0, 0};
    l.setTargetIndices(idx, T, mask);
    l.setAction(ReplayAction.REPLAY_FORWARD);
    int[] got = assertLayerReplays(l, logits(T, 8), T, new int[] {5, 6, 0, 1, 7, 1, 0, 0, 0, 0}, mask);
    assertEquals(0, got[2]);
    assertEquals(1, got[3]);
  }

  // ------------------------------------------------------------------ return values

  @Test
  void theHalfOverloadReturnsTheNonFiniteRowCountUnderEveryAction() {
    RouterReplay l = twoLayers().layer(L0);
    short[] bf16 = new short[3 * E];
    float[] f = logits(3, 4);
    for (int i = 0; i < bf16.length; i++) bf16[i] = (short) (Float.floatToRawIntBits(f[i]) >>> 16);
    bf16[E + 2] = (short) 0x7fc0;  // NaN in row 1
    bf16[2 * E + 5] = (short) 0xff80;  // -inf in row 2
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.JAVA)) {
      for (ReplayAction a : ReplayAction.values()) {
        l.setAction(a);
        if (a == ReplayAction.REPLAY_FORWARD) l.setTargetIndices(new int[] {0, 1, 2, 3, 4, 5}, 3);
        assertEquals(2, l.route(r, bf16, LogitsType.BF16, 3, new int[3 * K], new float[3 * K]), a.toString());
      }
    }
  }

  // ------------------------------------------------------------------ device bookkeeping, checked before any device work

  @Test
  void deviceTargetsAndBuffersCheckTheirArgumentsAtTheirLimits() {
    RouterReplay l = twoLayers().layer(L0);
    l.setTargetIndicesDevice(0, 0, 0);  // zero tokens need no indices
    assertEquals(0, l.targetTokens());
    assertEquals(1, l.backwardQueueSize());
    MoeRouterException e = assertThrows(MoeRouterException.class, () -> l.setTargetIndicesDevice(0, 0, 1));
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertEquals("decoder layer 0: device indices must not be 0", e.getMessage());
    e = assertThrows(MoeRouterException.class, () -> l.setTargetIndicesDevice(0x1000, 0, -1));
    assertEquals("decoder layer 0: tokens must be >= 0, got -1", e.getMessage());
    assertEquals(0, l.targetTokens(), "a refused set changes nothing");
    assertEquals(1, l.backwardQueueSize());

    l.setRecordBufferDevice(0x1000, 0);  // a zero-row device buffer is valid
    for (long[] bad : new long[][] {{0, 4}, {0x1000, -1}, {0, -1}}) {
      e = assertThrows(MoeRouterException.class, () -> l.setRecordBufferDevice(bad[0], bad[1]));
      assertEquals(Status.INVALID_ARGUMENT, e.status());
      assertEquals("decoder layer 0: device recording buffer must be non-0 with capacity >= 0", e.getMessage());
    }
  }

  @Test
  void aDeviceRecordingBufferReplacesAndClearsTheHostRecording() {
    RouterReplay l = twoLayers().layer(L0);
    l.setAction(ReplayAction.RECORD);
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.JAVA)) {
      l.route(r, logits(T, 1), T, new int[T * K], new float[T * K]);
      assertTrue(l.hasRecording());
      l.setRecordBufferDevice(0x1000, 16);
      assertFalse(l.hasRecording());
      assertEquals(0, l.recordedTokens());
      assertNull(l.recordedIndices());
      ReplayStateException e = assertThrows(ReplayStateException.class, () -> l.copyRecorded(new int[T * K], 0));
      assertEquals("decoder layer 0: the recording is in device memory (setRecordBufferDevice)", e.getMessage());
      e = assertThrows(ReplayStateException.class, () -> l.route(r, logits(T, 1), T, new int[T * K], new float[T * K]));
      assertEquals("decoder layer 0: RECORD has a device recording buffer; use routeDevice", e.getMessage());
    }
  }

  @Test
  void routeDeviceChecksTheRouterFirst() {
    RouterReplay l = twoLayers().layer(L0);
    try (MoeRouter top3 = MoeRouter.create(RouterConfig.builder(E, 3).build(), Backend.JAVA);
        MoeRouter e16 = MoeRouter.create(RouterConfig.builder(16, K).build(), Backend.JAVA)) {
      for (ReplayAction a : new ReplayAction[] {ReplayAction.NONE, ReplayAction.RECORD}) {
        l.setAction(a);
        MoeRouterException e = assertThrows(MoeRouterException.class,
            () -> l.routeDevice(top3, 0x2000, LogitsType.FP32, T, 0x3000, 0x4000, 0, 0));
        assertEquals(Status.INVALID_ARGUMENT, e.status(), a.toString());
        assertEquals("decoder layer 0 is top-2 of 8 experts, the router given is top-3 of 8", e.getMessage());
        e = assertThrows(MoeRouterException.class,
            () -> l.routeDevice(e16, 0x2000, LogitsType.FP32, T, 0x3000, 0x4000, 0x5000, 0, 0));
        assertEquals("decoder layer 0 is top-2 of 8 experts, the router given is top-2 of 16", e.getMessage());
      }
    }
  }

  // ------------------------------------------------------------------ device paths, on host memory

  /** Host memory standing in for device memory: logits, outputs, flags, count. */
  static final class Io implements AutoCloseable {
    final int tokens;
    final float[] host;
    final FloatPointer logits;
    final IntPointer idx;
    final FloatPointer weights;
    final BytePointer flags;
    final LongPointer count;

    Io(HostDeviceRouter r, int tokens, int seed) {
      this.tokens = tokens;
      host = logits(tokens, seed);
      host[E + 1] = Float.NaN;  // row 1 is non-finite
      logits = r.device(new FloatPointer(host));
      idx = r.device(new IntPointer(tokens * K));
      weights = r.device(new FloatPointer(tokens * K));
      flags = r.device(new BytePointer(tokens));
      count = r.device(new LongPointer(1));
      count.put(0, -5);
    }

    int[] idx() {
      int[] out = new int[tokens * K];
      idx.get(out);
      return out;
    }

    float[] weights() {
      float[] out = new float[tokens * K];
      weights.get(out);
      return out;
    }

    byte[] flags() {
      byte[] out = new byte[tokens];
      flags.get(out);
      return out;
    }

    void route(RouterReplay l, MoeRouter r, long stream) {
      l.routeDevice(r, logits.address(), LogitsType.FP32, tokens, idx.address(), weights.address(), flags.address(),
          count.address(), stream);
    }

    @Override
    public void close() {
      logits.close();
      idx.close();
      weights.close();
      flags.close();
      count.close();
    }
  }

  static byte[] rowFlags(int tokens) {
    byte[] f = new byte[tokens];
    f[1] = 1;
    return f;
  }

  @Test
  void routeDeviceRoutesLiveWithEveryArgumentPassedOn() {
    RouterReplay l = twoLayers().layer(L0);
    try (HostDeviceRouter r = new HostDeviceRouter(CONFIG); Io io = new Io(r, T, 3)) {
      io.route(l, r, 77);
      assertEquals(1, r.calls.size());
      HostDeviceRouter.Call c = r.calls.get(0);
      assertEquals(io.logits.address(), c.logits);
      assertEquals(LogitsType.FP32, c.type);
      assertEquals(T, c.tokens);
      assertEquals(0, c.replayIdx);
      assertEquals(0, c.replayMask);
      assertEquals(io.flags.address(), c.outFlags);
      assertEquals(io.count.address(), c.nonfiniteRows);
      assertEquals(77, c.stream);
      RoutingResult want = r.route(io.host, T);
      assertArrayEquals(want.indices(), io.idx());
      assertArrayEquals(want.weights(), io.weights());
      assertArrayEquals(rowFlags(T), io.flags());
      assertEquals(1, io.count.get(0));
      // The eight-argument overload passes no flags.
      l.routeDevice(r, io.logits.address(), LogitsType.FP32, T, io.idx.address(), io.weights.address(), 0, 78);
      assertEquals(0, r.calls.get(1).outFlags);
      assertEquals(0, r.calls.get(1).nonfiniteRows);
      assertEquals(78, r.calls.get(1).stream);
      // The double refuses memory it was not given, as a GPU would an illegal address.
      MoeRouterException e = assertThrows(MoeRouterException.class,
          () -> l.routeDevice(r, io.logits.address() + 4, LogitsType.FP32, T, io.idx.address(), io.weights.address(), 0, 0));
      assertEquals(Status.CUDA_ERROR, e.status());
      assertEquals(2, r.calls.size());
    }
  }

  @ParameterizedTest
  @EnumSource(value = NonFinitePolicy.class, names = {"PROPAGATE", "ZERO"})
  void recordOnTheDeviceAppendsEachCallAtItsRowsAndReturnsTheLiveRouting(NonFinitePolicy policy) {
    RouterConfig config = RouterConfig.builder(E, K).nonFinite(policy).build();
    ReplayRegistry reg = ReplayRegistry.builder().recordMode(RecordMode.APPEND).build();
    RouterReplay l = reg.addLayer(L0, config);
    int cap = 2 * T + 1;
    try (HostDeviceRouter r = new HostDeviceRouter(config); IntPointer dev = r.device(new IntPointer(cap * K));
        Io a = new Io(r, T, 1); Io b = new Io(r, T, 2)) {
      for (int i = 0; i < cap * K; i++) dev.put(i, -9);
      l.setRecordBufferDevice(dev.address(), cap);
      l.setAction(ReplayAction.RECORD);
      a.route(l, r, 5);
      b.route(l, r, 6);
      assertEquals(2 * T, l.recordedTokens());
      assertArrayEquals(new int[] {T, T}, l.recordedCallTokens());
      assertTrue(l.hasRecording());

      int[] want = new int[cap * K];
      Arrays.fill(want, -9);
      RoutingResult ra = r.route(a.host, T), rb = r.route(b.host, T);
      System.arraycopy(ra.indices(), 0, want, 0, T * K);
      System.arraycopy(rb.indices(), 0, want, T * K, T * K);
      int[] got = new int[cap * K];
      dev.get(got);
      assertArrayEquals(want, got, "call 1 at rows [0, T), call 2 at rows [T, 2T), the last row untouched");
      assertArrayEquals(ra.indices(), a.idx());
      assertArrayEquals(ra.weights(), a.weights());
      assertArrayEquals(rb.indices(), b.idx());
      assertArrayEquals(rb.weights(), b.weights());
      assertArrayEquals(rowFlags(T), b.flags());
      assertEquals(1, b.count.get(0));

      // Two router calls per RECORD call: live into the recording (flags, count), then the outputs.
      List<HostDeviceRouter.Call> calls = r.calls;
      assertEquals(4, calls.size());
      for (int c = 0; c < 4; c++) {
        Io io = c < 2 ? a : b;
        long slice = dev.address() + (c < 2 ? 0 : 4L * T * K);
        HostDeviceRouter.Call call = calls.get(c);
        assertEquals(io.logits.address(), call.logits);
        assertEquals(T, call.tokens);
        assertEquals(c < 2 ? 5 : 6, call.stream);
        assertEquals(0, call.replayMask);
        if (c % 2 == 0) {
          assertEquals(0, call.replayIdx);
          assertEquals(slice, call.outIdx, "the recording slice of call " + c / 2);
          assertEquals(io.flags.address(), call.outFlags);
          assertEquals(io.count.address(), call.nonfiniteRows);
        } else {
          // PROPAGATE replays the recording (same weights); ZERO routes live again (its zeroed rows).
          assertEquals(policy == NonFinitePolicy.PROPAGATE ? slice : 0, call.replayIdx);
          assertEquals(io.idx.address(), call.outIdx);
          assertEquals(io.weights.address(), call.outWeights);
          assertEquals(0, call.outFlags);
          assertEquals(0, call.nonfiniteRows);
        }
      }

      // Full: one more call of T tokens is refused before any device work.
      ReplayStateException full = assertThrows(ReplayStateException.class, () -> a.route(l, r, 7));
      assertEquals("decoder layer 0: device recording buffer holds 11 tokens, 10 recorded, this call routes 5",
          full.getMessage());
      assertEquals(4, r.calls.size());
      // Token counts beyond one int are refused as such; up to one int they meet the capacity check.
      MoeRouterException big = assertThrows(MoeRouterException.class,
          () -> l.routeDevice(r, a.logits.address(), LogitsType.FP32, 1L << 31, a.idx.address(), a.weights.address(), 0, 0));
      assertEquals(Status.INVALID_ARGUMENT, big.status());
      assertEquals("decoder layer 0: 2147483648 tokens in one call", big.getMessage());
      full = assertThrows(ReplayStateException.class, () -> l.routeDevice(r, a.logits.address(), LogitsType.FP32,
          Integer.MAX_VALUE, a.idx.address(), a.weights.address(), 0, 0));
      assertEquals("decoder layer 0: device recording buffer holds 11 tokens, 10 recorded, this call routes 2147483647",
          full.getMessage());
      assertEquals(4, r.calls.size());
      assertEquals(2 * T, l.recordedTokens());
    }
  }

  @Test
  void recordOnTheDeviceUnderLatestOverwritesRowZero() {
    RouterReplay l = twoLayers().layer(L0);
    try (HostDeviceRouter r = new HostDeviceRouter(CONFIG); IntPointer dev = r.device(new IntPointer(T * K));
        Io a = new Io(r, T, 1); Io b = new Io(r, 2, 2)) {
      l.setRecordBufferDevice(dev.address(), T);
      l.setAction(ReplayAction.RECORD);
      a.route(l, r, 0);
      b.route(l, r, 0);
      assertEquals(2, l.recordedTokens());
      assertArrayEquals(new int[] {2}, l.recordedCallTokens());
      assertEquals(dev.address(), r.calls.get(2).outIdx);
      int[] got = new int[T * K];
      dev.get(got);
      int[] want = r.route(a.host, T).indices();
      System.arraycopy(r.route(b.host, 2).indices(), 0, want, 0, 2 * K);
      assertArrayEquals(want, got);
    }
  }

  @ParameterizedTest
  @EnumSource(BackwardQueue.class)
  void replayOnTheDeviceUsesTheTargetForwardAndPopsItBackward(BackwardQueue queue) {
    ReplayRegistry reg = ReplayRegistry.builder().backwardQueue(queue).build();
    RouterReplay l = reg.addLayer(L0, CONFIG);
    int[] first = target(T, 2), second = target(T, 5);
    second[K] = 1;  // row 1 replays expert 1, whose logit is NaN: one non-finite row
    byte[] mask = {1, 1, 0, 1, 1};
    try (HostDeviceRouter r = new HostDeviceRouter(CONFIG); IntPointer d1 = r.device(new IntPointer(first));
        IntPointer d2 = r.device(new IntPointer(second)); BytePointer dm = r.device(new BytePointer(mask)); Io io = new Io(r, T, 4)) {
      l.setTargetIndicesDevice(d1.address(), dm.address(), T);
      l.setTargetIndicesDevice(d2.address(), 0, T);
      assertEquals(queue == BackwardQueue.ON_SET ? 2 : 0, l.backwardQueueSize());
      l.setAction(ReplayAction.REPLAY_FORWARD);
      io.route(l, r, 3);  // forward reads the latest target, twice (log-prob pass, training pass)
      io.route(l, r, 3);
      assertEquals(2, l.backwardQueueSize());
      for (HostDeviceRouter.Call c : r.calls) {
        assertEquals(d2.address(), c.replayIdx);
        assertEquals(0, c.replayMask);
        assertEquals(io.idx.address(), c.outIdx);
        assertEquals(io.flags.address(), c.outFlags);
        assertEquals(io.count.address(), c.nonfiniteRows);
        assertEquals(3, c.stream);
      }
      RoutingResult want = r.replay(io.host, T, second, null);
      assertArrayEquals(want.indices(), io.idx());
      assertArrayEquals(want.weights(), io.weights());
      // Replay reads only the replayed experts' logits: row 1's NaN (expert 1) counts only where it is replayed.
      long wantBad = r.replay(io.host, T, second, null, new int[T * K], new float[T * K]);
      assertEquals(1, wantBad);
      assertEquals(wantBad, io.count.get(0));

      l.setAction(ReplayAction.REPLAY_BACKWARD);
      io.route(l, r, 4);
      assertEquals(1, l.backwardQueueSize());
      HostDeviceRouter.Call c = r.calls.get(2);
      // ON_SET pops in set order (d1 with its mask first); ON_FORWARD in forward order (d2, twice).
      assertEquals(queue == BackwardQueue.ON_SET ? d1.address() : d2.address(), c.replayIdx);
      assertEquals(queue == BackwardQueue.ON_SET ? dm.address() : 0, c.replayMask);
      want = queue == BackwardQueue.ON_SET ? r.replay(io.host, T, first, mask) : want;
      assertArrayEquals(want.indices(), io.idx());
      assertArrayEquals(want.weights(), io.weights());
      io.route(l, r, 4);
      assertEquals(0, l.backwardQueueSize());
      reg.checkAllConsumed();
      ReplayStateException empty = assertThrows(ReplayStateException.class, () -> io.route(l, r, 4));
      assertTrue(empty.getMessage().startsWith("decoder layer 0: REPLAY_BACKWARD but the backward queue is empty"),
          empty.getMessage());
      assertEquals(4, r.calls.size());
    }
  }
}
