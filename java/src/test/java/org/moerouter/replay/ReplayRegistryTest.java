// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

import static org.junit.jupiter.api.Assertions.*;

import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.moerouter.Backend;
import org.moerouter.LogitsType;
import org.moerouter.MinusOneRows;
import org.moerouter.MoeRouter;
import org.moerouter.MoeRouterException;
import org.moerouter.RouterConfig;
import org.moerouter.Status;

/** docs/semantics.md section 7: every rule of the replay bookkeeping, on the JAVA and CPU backends. */
class ReplayRegistryTest {
  static final int E = 16, K = 2, T = 5;
  static final RouterConfig CONFIG = RouterConfig.builder(E, K).build();
  static final LayerKey L0 = LayerKey.decoder(0), L1 = LayerKey.decoder(1), MTP1 = LayerKey.mtp(1);
  MoeRouter router;
  ReplayRegistry reg;
  Random rnd = new Random(7);

  @BeforeEach
  void setUp() {
    router = MoeRouter.create(CONFIG, Backend.JAVA);
    reg = new ReplayRegistry();
    reg.addLayer(L0, CONFIG);
    reg.addLayer(L1, CONFIG);
    reg.addLayer(LayerKey.mtp(99), CONFIG, true); // never replayed
  }

  @AfterEach
  void tearDown() {
    router.close();
  }

  float[] logits() {
    float[] l = new float[T * E];
    for (int i = 0; i < l.length; i++) l[i] = (float) rnd.nextGaussian();
    return l;
  }

  static int[] target(int seed) {
    int[] idx = new int[T * K];
    for (int t = 0; t < T; t++) {
      idx[t * K] = (seed + t) % E;
      idx[t * K + 1] = (seed + t + 1) % E;
    }
    return idx;
  }

  int[] route(RouterReplay layer) {
    int[] idx = new int[T * K];
    layer.route(router, logits(), T, idx, new float[T * K]);
    return idx;
  }

  // ------------------------------------------------------------------ shapes

  @Test
  void stackedTwoLayerDataGivenToOneLayerIsRejectedNamingLayerAndShapes() {
    RouterReplay l = reg.layer(L0);
    l.setTargetIndices(target(3), T);
    int[] twoLayers = interleave(target(1), target(2)); // [T, 2 layers, k]: would replay shifted as k' = 2k
    ReplayStateException e = assertThrows(ReplayStateException.class, () -> l.setTargetIndices(twoLayers, T));
    assertEquals("decoder layer 0: target indices [5, 4] do not match the layer's [5, 2] (5 tokens, top-2)", e.getMessage());
    assertEquals(L0, e.layer());
    e = assertThrows(ReplayStateException.class, () -> l.setTargetIndices(twoLayers, new long[] {T, 2, K}, null));
    assertEquals("decoder layer 0: target indices [5, 2, 2] do not match the layer's [5, 2] (tokens, top-2); stacked"
        + " [tokens, layers, k] data goes through ReplayRegistry.setReplayData", e.getMessage());
    // Nothing changed: the earlier target still replays, and was queued once.
    l.setAction(ReplayAction.REPLAY_FORWARD);
    assertArrayEquals(target(3), route(l));
    assertEquals(1, l.backwardQueueSize());
  }

  @Test
  void aTopThreeRecordingGivenToATopTwoRouterIsRejected() {
    int[] top3 = new int[T * 3];
    for (int i = 0; i < top3.length; i++) top3[i] = i % E;
    RouterReplay l = reg.layer(L1);
    ReplayStateException e = assertThrows(ReplayStateException.class, () -> l.setTargetIndices(top3, T));
    assertEquals("decoder layer 1: target indices [5, 3] do not match the layer's [5, 2] (5 tokens, top-2)", e.getMessage());
    e = assertThrows(ReplayStateException.class, () -> l.setTargetIndices(top3, new long[] {T, 3}, null));
    assertEquals("decoder layer 1: target indices [5, 3] do not match the layer's [5, 2] (tokens, top-2)", e.getMessage());
    e = assertThrows(ReplayStateException.class, () -> l.setTargetIndices(new int[11], T));
    assertEquals("decoder layer 1: target indices [5, ?] (11 ints, not a multiple of 5) do not match the layer's [5, 2]"
        + " (5 tokens, top-2)", e.getMessage());
    assertFalse(l.hasTarget());
    assertEquals(0, l.backwardQueueSize());
  }

  @Test
  void invalidRowsAreRejectedWhenSetNamingLayerAndRow() {
    RouterReplay l = reg.layer(L0);
    int[] bad = target(0);
    bad[3 * K + 1] = E;
    ReplayStateException e = assertThrows(ReplayStateException.class, () -> l.setTargetIndices(bad, T));
    assertEquals("decoder layer 0: target row 3: expert 16 at position 1 is out of range [0, 16)", e.getMessage());
    int[] dup = target(0);
    dup[2 * K + 1] = dup[2 * K];
    e = assertThrows(ReplayStateException.class, () -> l.setTargetIndices(dup, T));
    assertEquals("decoder layer 0: target row 2: expert 2 appears twice (positions 0 and 1)", e.getMessage());
    // Rows with mask 0 route live and are not checked (as in the routers).
    byte[] mask = {1, 1, 0, 1, 1};
    l.setTargetIndices(dup, T, mask);
    e = assertThrows(ReplayStateException.class, () -> l.setTargetIndices(target(0), T, new byte[T + 1]));
    assertEquals("decoder layer 0: mask holds 6 entries, the target has 5 tokens", e.getMessage());
  }

  // ------------------------------------------------------------------ every-layer setters

  @Test
  void everyLayerSetterNeedsExactlyOneArrayPerLayerAndIsAllOrNothing() {
    reg.layer(L0).setTargetIndices(target(9), T);
    ReplayStateException e = assertThrows(ReplayStateException.class, () -> reg.setReplayData(new int[][] {target(1)}, T, null));
    assertEquals("setReplayData got 1 arrays for 2 replayable layers [decoder layer 0, decoder layer 1] (one per layer,"
        + " in registration order)", e.getMessage());
    assertNull(e.layer());
    int[] bad = target(2);
    bad[0] = -5;
    e = assertThrows(ReplayStateException.class, () -> reg.setReplayData(new int[][] {target(1), bad}, T, null));
    assertEquals(L1, e.layer());
    e = assertThrows(ReplayStateException.class, () -> reg.setReplayData(new int[][] {target(1), new int[T * 3]}, T, null));
    assertEquals("decoder layer 1: setReplayData array 1 is [5, 3], the layer needs [5, 2]", e.getMessage());
    // Nothing changed on layer 0, and layer 1 has no target.
    assertEquals(1, reg.layer(L0).backwardQueueSize());
    assertFalse(reg.layer(L1).hasTarget());
    reg.setAction(ReplayAction.REPLAY_FORWARD);
    assertArrayEquals(target(9), route(reg.layer(L0)));

    reg.setReplayData(new int[][] {target(1), target(2)}, T, null);
    assertArrayEquals(target(1), route(reg.layer(L0)));
    assertArrayEquals(target(2), route(reg.layer(L1)));
  }

  @Test
  void stackedSetterSplitsTokensLayersKByKeyAndChecksTheShape() {
    reg.setReplayData(interleave(target(1), target(2)), new long[] {T, 2, K}, null, null);
    reg.setAction(ReplayAction.REPLAY_FORWARD);
    assertArrayEquals(target(1), route(reg.layer(L0)));
    assertArrayEquals(target(2), route(reg.layer(L1)));
    // Explicit order: position 0 goes to layer 1.
    reg.setReplayData(interleave(target(3), target(4)), new long[] {T, 2, K}, new LayerKey[] {L1, L0}, null);
    assertArrayEquals(target(4), route(reg.layer(L0)));
    assertArrayEquals(target(3), route(reg.layer(L1)));
    ReplayStateException e = assertThrows(ReplayStateException.class,
        () -> reg.setReplayData(interleave(target(3), target(4)), new long[] {T, 1, 2 * K}, null, null));
    assertEquals("setReplayData: stacked indices [5, 1, 4] do not match [5, 2, 2] (tokens, 2 layers [decoder layer 0,"
        + " decoder layer 1], top-2)", e.getMessage());
    int[] bad = interleave(target(5), target(6));
    bad[(4 * 2 + 1) * K] = 99; // token 4, layer position 1
    e = assertThrows(ReplayStateException.class, () -> reg.setReplayData(bad, new long[] {T, 2, K}, null, null));
    assertEquals("decoder layer 1: target row 4: expert 99 at position 0 is out of range [0, 16)", e.getMessage());
    assertArrayEquals(target(4), route(reg.layer(L0)), "all-or-nothing: layer 0 keeps its target");
    e = assertThrows(ReplayStateException.class,
        () -> reg.setReplayData(new int[T * K], new long[] {T, 1, K}, new LayerKey[] {LayerKey.mtp(99)}, null));
    assertEquals("MTP layer 99 is marked never-replay; no target indices can be set for it", e.getMessage());
  }

  // ------------------------------------------------------------------ forward reads, backward pops

  @ParameterizedTest(name = "{0}")
  @EnumSource(value = Backend.class, names = {"JAVA", "CPU"})
  void aLogProbPassThenATrainingPassReplayTheSameTargetWithoutResetting(Backend backend) {
    try (MoeRouter r = MoeRouter.create(CONFIG, backend)) {
      float[] lg = logits();
      RouterReplay l = reg.layer(L0);
      l.setTargetIndices(target(4), T);
      l.setAction(ReplayAction.REPLAY_FORWARD);
      int[] logProbIdx = new int[T * K], trainIdx = new int[T * K];
      float[] logProbW = new float[T * K], trainW = new float[T * K];
      l.route(r, lg, T, logProbIdx, logProbW);   // old log-probs
      l.route(r, lg, T, trainIdx, trainW);       // training forward, no set in between
      assertArrayEquals(target(4), logProbIdx);
      assertArrayEquals(logProbIdx, trainIdx);
      assertArrayEquals(logProbW, trainW, 0f);
      assertTrue(l.hasTarget(), "a forward does not consume the target");
      assertEquals(1, l.backwardQueueSize(), "ON_SET queues once per set, not per forward");
      l.setAction(ReplayAction.REPLAY_BACKWARD);
      int[] recompute = new int[T * K];
      l.route(r, lg, T, recompute, new float[T * K]);
      assertArrayEquals(target(4), recompute);
      reg.checkAllConsumed();
      ReplayStateException e = assertThrows(ReplayStateException.class, () -> l.route(r, lg, T, recompute, new float[T * K]));
      assertEquals("decoder layer 0: REPLAY_BACKWARD but the backward queue is empty (more recomputes than targets set)",
          e.getMessage());
      assertEquals(L0, e.layer());
    }
  }

  @Test
  void missingTargetAndWrongTokenCountNameTheLayer() {
    RouterReplay l = reg.layer(L1);
    l.setAction(ReplayAction.REPLAY_FORWARD);
    ReplayStateException e = assertThrows(ReplayStateException.class, () -> route(l));
    assertEquals("decoder layer 1: REPLAY_FORWARD but no target indices are set (setTargetIndices)", e.getMessage());
    assertEquals(L1, e.layer());
    l.setTargetIndices(new int[(T - 1) * K], T - 1, new byte[T - 1]);
    e = assertThrows(ReplayStateException.class, () -> route(l));
    assertEquals("decoder layer 1: the target indices are [4, 2], the forward routes 5 tokens", e.getMessage());
    l.setAction(ReplayAction.REPLAY_BACKWARD);
    e = assertThrows(ReplayStateException.class, () -> route(l));
    assertEquals("decoder layer 1: the queued indices are [4, 2], the backward recompute routes 5 tokens", e.getMessage());
    assertEquals(1, l.backwardQueueSize(), "a rejected recompute pops nothing");
  }

  @Test
  void onSetQueuesPerSetInOneFOneBOrderAndOnForwardQueuesPerUse() {
    // Pipeline 1F1B with a set before each micro-batch's forward: S0 F0 S1 F1 B0 S2 F2 B1 B2.
    RouterReplay l = reg.layer(L1);
    short[] half = new short[T * E];
    for (int i = 0; i < half.length; i++) half[i] = (short) (Float.floatToIntBits((float) rnd.nextGaussian()) >>> 16);
    int[] idx = new int[T * K];
    float[] w = new float[T * K];
    for (String step : new String[] {"F0", "F1", "B0", "F2", "B1", "B2"}) {
      int mb = step.charAt(1) - '0';
      if (step.charAt(0) == 'F') {
        l.setTargetIndices(target(mb + 5), T);
        l.setAction(ReplayAction.REPLAY_FORWARD);
      } else {
        l.setAction(ReplayAction.REPLAY_BACKWARD);
      }
      l.route(router, half, LogitsType.BF16, T, idx, w);
      assertArrayEquals(target(mb + 5), idx, step);
    }
    reg.checkAllConsumed();

    ReplayRegistry onForward = ReplayRegistry.builder().backwardQueue(BackwardQueue.ON_FORWARD).build();
    RouterReplay f = onForward.addLayer(L0, CONFIG);
    f.setTargetIndices(target(1), T);
    assertEquals(0, f.backwardQueueSize(), "ON_FORWARD queues nothing at set time");
    f.setAction(ReplayAction.REPLAY_FORWARD);
    route(f);
    route(f);
    assertEquals(2, f.backwardQueueSize(), "ON_FORWARD queues at each forward use");
    ReplayStateException e = assertThrows(ReplayStateException.class, onForward::checkAllConsumed);
    assertEquals("replay entries left in backward queues: decoder layer 0: 2 entries never popped by REPLAY_BACKWARD",
        e.getMessage());
    f.setAction(ReplayAction.REPLAY_BACKWARD);
    assertArrayEquals(target(1), route(f));
    assertArrayEquals(target(1), route(f));
    onForward.checkAllConsumed();
  }

  // ------------------------------------------------------------------ recording

  @Test
  void recordKeepsTheLatestByDefaultAndEveryCallUnderAppend() {
    RouterReplay l = reg.layer(L0);
    l.setAction(ReplayAction.RECORD);
    assertNull(l.recordedIndices());
    int[] first = route(l);
    int[] second = route(l);
    assertFalse(java.util.Arrays.equals(first, second));
    assertArrayEquals(second, l.recordedIndices(), "LATEST overwrites (Megatron record_indices)");
    assertEquals(T, l.recordedTokens());
    assertArrayEquals(new int[] {T}, l.recordedCallTokens());

    ReplayRegistry append = ReplayRegistry.builder().recordMode(RecordMode.APPEND).build();
    RouterReplay a = append.addLayer(L0, CONFIG);
    a.setAction(ReplayAction.RECORD);
    int[] c1 = route(a), c2 = route(a);
    int[] both = new int[2 * T * K];
    System.arraycopy(c1, 0, both, 0, T * K);
    System.arraycopy(c2, 0, both, T * K, T * K);
    assertArrayEquals(both, a.recordedIndices(), "APPEND keeps every call in order (slime/miles)");
    assertArrayEquals(new int[] {T, T}, a.recordedCallTokens());
    // APPEND into a caller's stacked buffer: the second call goes to rows [T, 2T) of the layer's slice.
    int[] stacked = new int[2 * T * K];
    append.setStaticBuffer(stacked, 2 * T);
    int[] d1 = route(a), d2 = route(a);
    for (int t = 0; t < T; t++)
      for (int j = 0; j < K; j++) {
        assertEquals(d1[t * K + j], stacked[t * K + j]);
        assertEquals(d2[t * K + j], stacked[(T + t) * K + j]);
      }
    ReplayStateException full = assertThrows(ReplayStateException.class, () -> route(a));
    assertEquals("decoder layer 0: recording buffer holds 10 tokens, 10 recorded, this call routes 5", full.getMessage());
    append.clear();
    assertNull(a.recordedIndices());
    assertEquals(ReplayAction.RECORD, a.action(), "clear keeps actions");
  }

  @Test
  void recordIntoACallerOwnedStackedBufferWritesEachLayersStridedSlice() {
    int maxTokens = 8;
    int[] buffer = new int[maxTokens * 3 * K];
    java.util.Arrays.fill(buffer, -7);
    reg.setStaticBuffer(buffer, maxTokens);
    reg.setAction(ReplayAction.RECORD);
    int[] l0 = route(reg.layer(L0)), l1 = route(reg.layer(L1));
    reg.layer(L0).setAction(ReplayAction.RECORD); // replayable layers only: MTP 99 is never-replay
    for (int t = 0; t < T; t++)
      for (int j = 0; j < K; j++) {
        assertEquals(l0[t * K + j], buffer[(t * 3) * K + j]);
        assertEquals(l1[t * K + j], buffer[(t * 3 + 1) * K + j]);
        assertEquals(-7, buffer[(t * 3 + 2) * K + j], "the never-replay layer's slice is untouched");
      }
    for (int i = T * 3 * K; i < buffer.length; i++) assertEquals(-7, buffer[i], "rows >= T untouched");
    assertArrayEquals(l1, reg.layer(L1).recordedIndices());
    assertArrayEquals(interleave(l0, l1), reg.recordedStacked(new LayerKey[] {L0, L1}));
    int[][] data = reg.recordedData();
    assertArrayEquals(l0, data[0]);
    assertNull(data[2]);

    // LATEST writes rows [0, T) again; a call larger than the buffer is refused before routing.
    int[] again = route(reg.layer(L0));
    assertEquals(again[0], buffer[0]);
    float[] big = new float[(maxTokens + 1) * E];
    ReplayStateException e = assertThrows(ReplayStateException.class,
        () -> reg.layer(L0).route(router, big, maxTokens + 1, new int[(maxTokens + 1) * K], new float[(maxTokens + 1) * K]));
    assertEquals("decoder layer 0: recording buffer holds 8 tokens, 0 recorded, this call routes 9", e.getMessage());
    e = assertThrows(ReplayStateException.class, () -> reg.setStaticBuffer(new int[maxTokens * 2 * K], maxTokens));
    assertEquals("static buffer of 32 ints is not [8, 3, 2] (max tokens, 3 layers, top-2)", e.getMessage());
  }

  // ------------------------------------------------------------------ MTP

  @Test
  void anMtpLayerNumberedLikeADecoderLayerNeverGetsTheDecodersIndices() {
    ReplayRegistry r = new ReplayRegistry();
    r.addLayer(L1, CONFIG);
    r.addLayer(MTP1, CONFIG); // same number, different kind: its own replay state
    assertEquals("[decoder layer 1, MTP layer 1]", java.util.Arrays.toString(r.replayableKeys()));
    r.setReplayData(interleave(target(1), target(8)), new long[] {T, 2, K}, new LayerKey[] {MTP1, L1}, null);
    r.setAction(ReplayAction.REPLAY_FORWARD);
    assertArrayEquals(target(8), route(r.layer(LayerKind.DECODER, 1)));
    assertArrayEquals(target(1), route(r.layer(LayerKind.MTP, 1)));
    r.layer(L1).setTargetIndices(target(3), T);
    assertArrayEquals(target(1), route(r.layer(MTP1)), "setting decoder layer 1 leaves MTP layer 1 alone");
    assertThrows(MoeRouterException.class, () -> r.addLayer(LayerKey.mtp(1), CONFIG));
  }

  // ------------------------------------------------------------------ -1 rows

  @ParameterizedTest(name = "{0}")
  @EnumSource(value = Backend.class, names = {"JAVA", "CPU"})
  void minusOneRowsAreRejectedRoutedLiveOrReplayedAsArange(Backend backend) {
    try (MoeRouter r = MoeRouter.create(CONFIG, backend)) {
      float[] lg = logits();
      int[] live = new int[T * K];
      float[] liveW = new float[T * K];
      r.route(lg, T, live, liveW);
      int[] padded = target(2);
      padded[3 * K] = -1;
      padded[3 * K + 1] = -1;

      ReplayStateException e = assertThrows(ReplayStateException.class, () -> reg.layer(L0).setTargetIndices(padded, T));
      assertEquals("decoder layer 0: target row 3 is all -1 (padding), rejected under minus_one_rows REJECT (use LIVE to"
          + " route it live or ARANGE to replay experts 0..k-1)", e.getMessage());

      for (MinusOneRows policy : new MinusOneRows[] {MinusOneRows.LIVE, MinusOneRows.ARANGE}) {
        ReplayRegistry reg2 = ReplayRegistry.builder().minusOneRows(policy).build();
        RouterReplay l = reg2.addLayer(L0, CONFIG);
        int[] given = padded.clone();
        l.setTargetIndices(given, T);
        assertArrayEquals(padded, given, "the caller's array is not modified");
        l.setAction(ReplayAction.REPLAY_FORWARD);
        int[] idx = new int[T * K];
        l.route(r, lg, T, idx, new float[T * K]);
        for (int t = 0; t < T; t++)
          for (int j = 0; j < K; j++) {
            int want = t != 3 ? target(2)[t * K + j] : policy == MinusOneRows.LIVE ? live[t * K + j] : j;
            assertEquals(want, idx[t * K + j], policy + " row " + t);
          }
        int[] mixed = padded.clone();
        mixed[3 * K + 1] = 4;
        e = assertThrows(ReplayStateException.class, () -> l.setTargetIndices(mixed, T));
        assertEquals("decoder layer 0: target row 3 mixes -1 (padding) with experts [-1, 4]; a padding row must be all -1",
            e.getMessage(), "mixed rows are rejected under " + policy);
      }
    }
  }

  // ------------------------------------------------------------------ never-replay, suspend, clear, devices

  @Test
  void suspendRestoresEveryLayerEvenWhenTheBodyThrows() {
    reg.layer(L0).setAction(ReplayAction.REPLAY_FORWARD);
    reg.layer(L1).setAction(ReplayAction.RECORD);
    RuntimeException boom = assertThrows(RuntimeException.class, () -> {
      try (Suspension s = reg.suspend()) {
        assertEquals(ReplayAction.NONE, reg.layer(L0).action());
        assertEquals(ReplayAction.NONE, reg.layer(L1).action());
        route(reg.layer(L0)); // live while suspended, even with no target set
        try (Suspension inner = reg.layer(L1).suspend()) {
          throw new RuntimeException("boom");
        }
      }
    });
    assertEquals("boom", boom.getMessage());
    assertEquals(ReplayAction.REPLAY_FORWARD, reg.layer(L0).action());
    assertEquals(ReplayAction.RECORD, reg.layer(L1).action());
    Suspension s = reg.suspend();
    s.close();
    reg.layer(L0).setAction(ReplayAction.NONE);
    s.close(); // idempotent: does not restore twice
    assertEquals(ReplayAction.NONE, reg.layer(L0).action());
  }

  @Test
  void registryActionsNeverReachNeverReplayLayers() {
    // Issue 17: setAction(RECORD) switching the MTP layer would put MTP routing into the traces.
    RouterReplay mtp = reg.layer(LayerKey.mtp(99));
    for (ReplayAction a : ReplayAction.values()) {
      reg.setAction(a);
      assertEquals(ReplayAction.NONE, mtp.action(), a.toString());
      assertEquals(a, reg.layer(L0).action(), a.toString());
      assertEquals(a, reg.layer(L1).action(), a.toString());
    }
    reg.setAction(ReplayAction.RECORD);
    route(mtp);
    route(reg.layer(L0));
    assertEquals(0, mtp.recordedTokens(), "the never-replay layer recorded");
    assertEquals(T, reg.layer(L0).recordedTokens());
  }

  @Test
  void suspendRestoresTheLastLayerToo() {
    // Issue 17: a restore loop stopping one short passed the test above, whose last layer is already NONE.
    ReplayRegistry r2 = new ReplayRegistry();
    r2.addLayer(L0, CONFIG).setAction(ReplayAction.RECORD);
    r2.addLayer(L1, CONFIG).setAction(ReplayAction.REPLAY_FORWARD);
    r2.addLayer(MTP1, CONFIG).setAction(ReplayAction.REPLAY_BACKWARD);
    try (Suspension s = r2.suspend()) {
      for (RouterReplay l : r2.layers()) assertEquals(ReplayAction.NONE, l.action(), l.key().toString());
    }
    assertEquals(ReplayAction.RECORD, r2.layer(L0).action());
    assertEquals(ReplayAction.REPLAY_FORWARD, r2.layer(L1).action());
    assertEquals(ReplayAction.REPLAY_BACKWARD, r2.layer(MTP1).action());
    try (Suspension s = r2.layer(MTP1).suspend()) {
      assertEquals(ReplayAction.NONE, r2.layer(MTP1).action());
      assertEquals(ReplayAction.RECORD, r2.layer(L0).action(), "a layer's own suspension touches no other layer");
    }
    assertEquals(ReplayAction.REPLAY_BACKWARD, r2.layer(MTP1).action());
  }

  @Test
  void neverReplayLayersRouteLiveAndAcceptNoTarget() {
    reg.setAction(ReplayAction.REPLAY_FORWARD);
    RouterReplay mtp = reg.layer(LayerKey.mtp(99));
    assertTrue(mtp.neverReplay());
    assertEquals(ReplayAction.NONE, mtp.action());
    float[] lg = logits();
    int[] live = new int[T * K], idx = new int[T * K];
    float[] w = new float[T * K];
    router.route(lg, T, live, w);
    mtp.route(router, lg, T, idx, w);
    assertArrayEquals(live, idx);
    assertThrows(ReplayStateException.class, () -> mtp.setAction(ReplayAction.RECORD));
    ReplayStateException e = assertThrows(ReplayStateException.class, () -> mtp.setTargetIndices(target(0), T));
    assertEquals("MTP layer 99 is marked never-replay; no target indices can be set for it", e.getMessage());
    reg.checkAllConsumed();
  }

  @Test
  void clearEmptiesTargetsRecordingsAndQueuesButKeepsActions() {
    reg.setReplayData(new int[][] {target(1), target(2)}, T, null);
    reg.setAction(ReplayAction.REPLAY_FORWARD);
    reg.clear();
    assertFalse(reg.layer(L0).hasTarget());
    assertEquals(0, reg.layer(L0).backwardQueueSize());
    assertEquals(ReplayAction.REPLAY_FORWARD, reg.layer(L0).action());
    reg.clearActions();
    assertEquals(ReplayAction.NONE, reg.layer(L0).action());
  }

  @Test
  void registryBasicsAndRouterMismatch() {
    assertThrows(MoeRouterException.class, () -> reg.addLayer(L0, CONFIG));
    MoeRouterException e = assertThrows(MoeRouterException.class, () -> reg.layer(LayerKey.decoder(5)));
    assertEquals("decoder layer 5 is not registered (layers: [decoder layer 0, decoder layer 1, MTP layer 99])", e.getMessage());
    assertEquals(3, reg.layers().size());
    ReplayRegistry other = new ReplayRegistry();
    other.addLayer(L0, CONFIG).setAction(ReplayAction.RECORD);
    assertEquals(ReplayAction.NONE, reg.layer(L0).action(), "two registries (two models) share no state");
    try (MoeRouter top3 = MoeRouter.create(RouterConfig.builder(E, 3).build(), Backend.JAVA)) {
      e = assertThrows(MoeRouterException.class,
          () -> reg.layer(L0).route(top3, logits(), T, new int[T * 3], new float[T * 3]));
      assertEquals("decoder layer 0 is top-2 of 16 experts, the router given is top-3 of 16", e.getMessage());
    }
  }

  @Test
  void deviceVariantsKeepTheSameRules() {
    RouterReplay l = reg.layer(L0);
    l.setAction(ReplayAction.REPLAY_FORWARD);
    l.setTargetIndicesDevice(0x1000, 0, T);
    ReplayStateException e = assertThrows(ReplayStateException.class, () -> route(l));
    assertEquals("decoder layer 0: the target indices were set on the device (setTargetIndicesDevice); use routeDevice",
        e.getMessage());
    l.setTargetIndices(target(1), T);
    e = assertThrows(ReplayStateException.class, () -> l.routeDevice(router, 0x2000, LogitsType.FP32, T, 0x3000, 0x4000, 0, 0));
    assertEquals("decoder layer 0: the target indices were set on the host (setTargetIndices); use route", e.getMessage());
    // Device targets keep their -1 rows: the router's own minus_one_rows treats them, so it must be the registry's.
    ReplayRegistry live = ReplayRegistry.builder().minusOneRows(MinusOneRows.LIVE).build();
    RouterReplay ll = live.addLayer(L0, CONFIG);
    ll.setAction(ReplayAction.REPLAY_FORWARD);
    ll.setTargetIndicesDevice(0x1000, 0, T);
    MoeRouterException u = assertThrows(MoeRouterException.class,
        () -> ll.routeDevice(router, 0x2000, LogitsType.FP32, T, 0x3000, 0x4000, 0, 0));
    assertEquals(Status.INVALID_ARGUMENT, u.status());
    assertEquals("decoder layer 0: device targets keep their rows of -1, which the router treats by its minus_one_rows"
        + " (REJECT), not the registry's (LIVE); build the router with minusOneRows(LIVE)", u.getMessage());
    try (MoeRouter liveRouter = MoeRouter.create(RouterConfig.builder(E, K).minusOneRows(MinusOneRows.LIVE).build(),
        Backend.JAVA)) {
      u = assertThrows(MoeRouterException.class,
          () -> ll.routeDevice(liveRouter, 0x2000, LogitsType.FP32, T, 0x3000, 0x4000, 0, 0));
      assertEquals(Status.UNSUPPORTED, u.status(), "the policies agree: on to the router, which needs CUDA");
    }
    l.setAction(ReplayAction.RECORD);
    e = assertThrows(ReplayStateException.class, () -> l.routeDevice(router, 0x2000, LogitsType.FP32, T, 0x3000, 0x4000, 0, 0));
    assertEquals("decoder layer 0: RECORD on the device needs setRecordBufferDevice", e.getMessage());
  }

  static int[] interleave(int[] a, int[] b) {
    int[] out = new int[2 * T * K];
    for (int t = 0; t < T; t++) {
      System.arraycopy(a, t * K, out, (2 * t) * K, K);
      System.arraycopy(b, t * K, out, (2 * t + 1) * K, K);
    }
    return out;
  }
}
