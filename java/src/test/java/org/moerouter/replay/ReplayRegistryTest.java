package org.moerouter.replay;

import static org.junit.jupiter.api.Assertions.*;

import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.moerouter.Backend;
import org.moerouter.LogitsType;
import org.moerouter.MoeRouter;
import org.moerouter.RouterConfig;

class ReplayRegistryTest {
  static final int E = 16, K = 2, T = 5;
  MoeRouter router;
  ReplayRegistry reg;
  Random rnd = new Random(7);

  @BeforeEach
  void setUp() {
    router = MoeRouter.create(RouterConfig.builder(E, K).build(), Backend.JAVA);
    reg = new ReplayRegistry();
    reg.addLayer(0);
    reg.addLayer(1);
    reg.addLayer(99, true); // MTP
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

  @Test
  void fifoOrderAcrossMicroBatches() {
    reg.setAction(ReplayAction.REPLAY_FORWARD);
    for (int mb = 0; mb < 3; mb++) reg.setTarget(0, mb, target(mb * 3), null, T);
    assertArrayEquals(new int[] {0, 1, 2}, reg.layer(0).pendingMicroBatches());
    int[] idx = new int[T * K];
    float[] w = new float[T * K];
    for (int mb = 0; mb < 3; mb++) {
      reg.layer(0).route(router, logits(), T, idx, w);
      assertArrayEquals(target(mb * 3), idx, "forward replays micro-batch " + mb);
    }
    assertArrayEquals(new int[] {0, 1, 2}, reg.layer(0).queuedMicroBatches());
    reg.setAction(ReplayAction.REPLAY_BACKWARD);
    for (int mb = 0; mb < 3; mb++) {
      reg.layer(0).route(router, logits(), T, idx, w);
      assertArrayEquals(target(mb * 3), idx, "recompute takes micro-batch " + mb + " in FIFO order");
    }
    reg.checkAllConsumed();
    ReplayStateException e = assertThrows(ReplayStateException.class, () -> reg.layer(0).route(router, logits(), T, idx, w));
    assertEquals("layer 0: REPLAY_BACKWARD but no replayed micro-batch is queued (more recomputes than replayed forwards)", e.getMessage());
  }

  @Test
  void interleavedOneFOneBScheduleAndBf16() {
    // Pipeline 1F1B: F0 F1 B0 F2 B1 B2.
    short[] half = new short[T * E];
    for (int i = 0; i < half.length; i++) half[i] = (short) (Float.floatToIntBits((float) rnd.nextGaussian()) >>> 16);
    for (int mb = 0; mb < 3; mb++) reg.setTarget(1, mb, target(mb + 5), null, T);
    RouterReplay l = reg.layer(1);
    int[] idx = new int[T * K];
    float[] w = new float[T * K];
    String[] schedule = {"F0", "F1", "B0", "F2", "B1", "B2"};
    for (String step : schedule) {
      l.setAction(step.charAt(0) == 'F' ? ReplayAction.REPLAY_FORWARD : ReplayAction.REPLAY_BACKWARD);
      l.route(router, half, LogitsType.BF16, T, idx, w);
      assertArrayEquals(target(step.charAt(1) - '0' + 5), idx, step);
    }
    reg.checkAllConsumed();
  }

  @Test
  void maskedRowsRouteLive() {
    float[] lg = logits();
    int[] live = new int[T * K];
    float[] w = new float[T * K];
    router.route(lg, T, live, w);
    byte[] mask = {1, 0, 1, 0, 1};
    reg.setTarget(0, 0, target(3), mask, T);
    reg.layer(0).setAction(ReplayAction.REPLAY_FORWARD);
    int[] idx = new int[T * K];
    reg.layer(0).route(router, lg, T, idx, w);
    for (int t = 0; t < T; t++)
      for (int j = 0; j < K; j++) assertEquals(mask[t] == 1 ? target(3)[t * K + j] : live[t * K + j], idx[t * K + j]);
  }

  @Test
  void unconsumedEntriesNameLayerAndMicroBatch() {
    reg.setAction(ReplayAction.REPLAY_FORWARD);
    reg.setTargets(0, T, new int[] {0, 1}, interleave(target(1), target(2)), null);
    reg.setTargets(1, T, new int[] {0, 1}, interleave(target(3), target(4)), null);
    int[] idx = new int[T * K];
    float[] w = new float[T * K];
    reg.layer(0).route(router, logits(), T, idx, w);
    assertArrayEquals(target(1), idx);
    reg.layer(1).route(router, logits(), T, idx, w);
    assertArrayEquals(target(2), idx, "setTargets splits [tokens, layers, k] per layer");
    ReplayStateException e = assertThrows(ReplayStateException.class, reg::checkAllConsumed);
    assertEquals(0, e.layerId());
    assertEquals(1, e.microBatch());
    assertEquals("replay entries left unconsumed: layer 0: indices set for micro-batch 1 never used by a REPLAY_FORWARD; "
        + "layer 0: micro-batch 0 replayed forward but never consumed by REPLAY_BACKWARD (activation recompute); "
        + "layer 1: indices set for micro-batch 1 never used by a REPLAY_FORWARD; "
        + "layer 1: micro-batch 0 replayed forward but never consumed by REPLAY_BACKWARD (activation recompute)", e.getMessage());
    reg.clear();
    reg.checkAllConsumed();
  }

  static int[] interleave(int[] a, int[] b) {
    int[] out = new int[2 * T * K];
    for (int t = 0; t < T; t++) {
      System.arraycopy(a, t * K, out, (2 * t) * K, K);
      System.arraycopy(b, t * K, out, (2 * t + 1) * K, K);
    }
    return out;
  }

  @Test
  void missingTargetWrongTokensAndDuplicateMicroBatch() {
    RouterReplay l = reg.layer(0);
    l.setAction(ReplayAction.REPLAY_FORWARD);
    int[] idx = new int[T * K];
    float[] w = new float[T * K];
    ReplayStateException e = assertThrows(ReplayStateException.class, () -> l.route(router, logits(), T, idx, w));
    assertEquals("layer 0: REPLAY_FORWARD but no indices were set for this micro-batch (setTarget)", e.getMessage());
    l.setTarget(4, target(0), null, T - 1);
    e = assertThrows(ReplayStateException.class, () -> l.route(router, logits(), T, idx, w));
    assertEquals("layer 0 micro-batch 4: indices were set for 4 tokens, the forward routes 5", e.getMessage());
    assertEquals(4, e.microBatch());
    e = assertThrows(ReplayStateException.class, () -> l.setTarget(4, target(0), null, T));
    assertEquals("layer 0: indices for micro-batch 4 are already set and not yet consumed", e.getMessage());
  }

  @Test
  void suspendRestoresEveryLayerEvenWhenTheBodyThrows() {
    reg.layer(0).setAction(ReplayAction.REPLAY_FORWARD);
    reg.layer(1).setAction(ReplayAction.RECORD);
    RuntimeException boom = assertThrows(RuntimeException.class, () -> {
      try (Suspension s = reg.suspend()) {
        assertEquals(ReplayAction.NONE, reg.layer(0).action());
        assertEquals(ReplayAction.NONE, reg.layer(1).action());
        // Live routing while suspended, even with no targets set.
        reg.layer(0).route(router, logits(), T, new int[T * K], new float[T * K]);
        try (Suspension inner = reg.layer(1).suspend()) {
          throw new RuntimeException("boom");
        }
      }
    });
    assertEquals("boom", boom.getMessage());
    assertEquals(ReplayAction.REPLAY_FORWARD, reg.layer(0).action());
    assertEquals(ReplayAction.RECORD, reg.layer(1).action());
    assertEquals(ReplayAction.NONE, reg.layer(99).action());
    Suspension s = reg.suspend();
    s.close();
    reg.layer(0).setAction(ReplayAction.NONE);
    s.close(); // idempotent: does not restore twice
    assertEquals(ReplayAction.NONE, reg.layer(0).action());
  }

  @Test
  void neverReplayLayersRouteLive() {
    reg.setAction(ReplayAction.REPLAY_FORWARD);
    RouterReplay mtp = reg.layer(99);
    assertTrue(mtp.neverReplay());
    assertEquals(ReplayAction.NONE, mtp.action());
    float[] lg = logits();
    int[] live = new int[T * K], idx = new int[T * K];
    float[] w = new float[T * K];
    router.route(lg, T, live, w);
    mtp.route(router, lg, T, idx, w);
    assertArrayEquals(live, idx);
    assertThrows(ReplayStateException.class, () -> mtp.setAction(ReplayAction.RECORD));
    assertThrows(ReplayStateException.class, () -> mtp.setTarget(0, target(0), null, T));
    assertThrows(ReplayStateException.class, () -> reg.setTargets(0, T, new int[] {0, 99}, interleave(target(0), target(1)), null));
    assertEquals(0, reg.layer(0).pendingMicroBatches().length, "nothing set when one layer is rejected");
    reg.checkAllConsumed();
  }

  @Test
  void recordAppendsIntoTheCallersBuffer() {
    RouterReplay l = reg.layer(0);
    int[] buf = new int[3 * T * K];
    l.setRecordBuffer(buf);
    l.setAction(ReplayAction.RECORD);
    int[] idx = new int[T * K];
    float[] w = new float[T * K];
    int[][] seen = new int[3][];
    for (int i = 0; i < 3; i++) {
      l.route(router, logits(), T, idx, w);
      seen[i] = idx.clone();
    }
    assertEquals(3 * T, l.recordedTokens());
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < T * K; j++) assertEquals(seen[i][j], buf[i * T * K + j]);
    ReplayStateException e = assertThrows(ReplayStateException.class, () -> l.route(router, logits(), T, idx, w));
    assertEquals("layer 0: recording buffer holds 15 tokens, 15 recorded, this call routes 5", e.getMessage());
    l.resetRecording();
    l.route(router, logits(), T, idx, w);
    assertEquals(T, l.recordedTokens());
    // RECORD without a buffer is a clear error.
    reg.layer(1).setAction(ReplayAction.RECORD);
    e = assertThrows(ReplayStateException.class, () -> reg.layer(1).route(router, logits(), T, idx, w));
    assertEquals("layer 1: RECORD needs a host recording buffer (setRecordBuffer)", e.getMessage());
  }

  @Test
  void registryBasics() {
    assertThrows(org.moerouter.MoeRouterException.class, () -> reg.addLayer(0));
    assertThrows(org.moerouter.MoeRouterException.class, () -> reg.layer(5));
    assertEquals(3, reg.layers().size());
    // Two registries (two models) do not share state.
    ReplayRegistry other = new ReplayRegistry();
    other.addLayer(0).setAction(ReplayAction.RECORD);
    assertEquals(ReplayAction.NONE, reg.layer(0).action());
  }
}
