// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.HashSet;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.moerouter.Backend;
import org.moerouter.MinusOneRows;
import org.moerouter.MoeRouter;
import org.moerouter.MoeRouterException;
import org.moerouter.RouterConfig;
import org.moerouter.Status;

/**
 * Exact limits of the replay bookkeeping (record buffers that hold exactly enough, one int short, one
 * call too many), the values its calls return, and the identity of layer keys. Written against the
 * mutants PIT found surviving (docs/testing.md).
 */
class ReplayBoundsTest {
  static final int E = 8, K = 2;
  static final RouterConfig CONFIG = RouterConfig.builder(E, K).build();

  static float[] logits(int tokens, int seed) {
    float[] l = new float[tokens * E];
    for (int i = 0; i < l.length; i++) l[i] = ((i * 7 + seed * 13) % 17) * 0.25f;
    return l;
  }

  @Test
  void aRecordBufferMayBeExactlyLargeEnoughButNotOneIntShort() {
    RouterReplay l = new ReplayRegistry().addLayer(LayerKey.decoder(0), CONFIG);
    // 3 rows of k = 2 at offset 1, stride 5: the last row ends at 1 + 2 * 5 + 2 = 13.
    l.setRecordBuffer(new int[13], 1, 5, 3);
    MoeRouterException e = assertThrows(MoeRouterException.class, () -> l.setRecordBuffer(new int[12], 1, 5, 3));
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertEquals("decoder layer 0: record buffer of 12 ints cannot hold 3 rows of 2 from offset 1 with stride 5",
        e.getMessage());
    l.setRecordBuffer(new int[0], 0, K, 0);  // zero rows need no room
    l.setRecordBuffer(new int[K], 0, K, 1);
    assertThrows(MoeRouterException.class, () -> l.setRecordBuffer(new int[13], -1, 5, 3));
    assertThrows(MoeRouterException.class, () -> l.setRecordBuffer(new int[13], 0, K - 1, 3));
    assertThrows(MoeRouterException.class, () -> l.setRecordBuffer(new int[13], 0, K, -1));
  }

  @Test
  void recordingGoesToItsRowsAndCopiesOutExactly() {
    ReplayRegistry reg = ReplayRegistry.builder().recordMode(RecordMode.APPEND).build();
    RouterReplay l = reg.addLayer(LayerKey.decoder(0), CONFIG);
    int[] buffer = new int[1 + 4 * 5];
    Arrays.fill(buffer, -9);
    l.setRecordBuffer(buffer, 1, 5, 4);
    l.setAction(ReplayAction.RECORD);
    assertFalse(l.hasRecording());
    assertNull(l.recordedIndices());
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.JAVA)) {
      int[] a = new int[2 * K], b = new int[2 * K];
      l.route(r, logits(2, 1), 2, a, new float[2 * K]);
      assertTrue(l.hasRecording());
      l.route(r, logits(2, 2), 2, b, new float[2 * K]);
      assertEquals(4, l.recordedTokens());
      assertArrayEquals(new int[] {2, 2}, l.recordedCallTokens());
      int[] all = new int[4 * K];
      System.arraycopy(a, 0, all, 0, 2 * K);
      System.arraycopy(b, 0, all, 2 * K, 2 * K);
      assertArrayEquals(all, l.recordedIndices());
      for (int t = 0; t < 4; t++) {
        assertArrayEquals(Arrays.copyOfRange(all, t * K, t * K + K), Arrays.copyOfRange(buffer, 1 + t * 5, 1 + t * 5 + K));
        for (int j = K; j < 5 && 1 + t * 5 + j < buffer.length; j++) assertEquals(-9, buffer[1 + t * 5 + j], "stride gap");
      }
      assertEquals(-9, buffer[0], "before the offset");
      int[] dst = new int[3 + 4 * K];
      assertEquals(4 * K, l.copyRecorded(dst, 3));
      assertArrayEquals(all, Arrays.copyOfRange(dst, 3, dst.length));
      assertThrows(MoeRouterException.class, () -> l.copyRecorded(new int[4 * K + 2], 3));
      assertThrows(MoeRouterException.class, () -> l.copyRecorded(dst, -1));
      // The buffer is full: one more token is refused, naming the numbers.
      ReplayStateException full = assertThrows(ReplayStateException.class,
          () -> l.route(r, logits(1, 3), 1, new int[K], new float[K]));
      assertTrue(full.getMessage().contains("holds 4 tokens, 4 recorded, this call routes 1"), full.getMessage());
      l.clear();
      assertFalse(l.hasRecording());
      assertEquals(0, l.recordedTokens());
      // Many calls: the per-call list grows.
      l.setRecordBuffer(new int[40 * K]);
      for (int c = 0; c < 20; c++) l.route(r, logits(2, c), 2, new int[2 * K], new float[2 * K]);
      int[] calls = new int[20];
      Arrays.fill(calls, 2);
      assertArrayEquals(calls, l.recordedCallTokens());
      assertEquals(40, l.recordedTokens());
    }
  }

  @Test
  void routeReturnsTheNonFiniteRowCountUnderEveryAction() {
    RouterReplay l = new ReplayRegistry().addLayer(LayerKey.decoder(0), CONFIG);
    float[] lg = logits(3, 4);
    lg[E + 3] = Float.NaN;  // row 1
    lg[2 * E] = Float.POSITIVE_INFINITY;  // row 2
    int[] target = {0, 1, 3, 4, 0, 5};
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.JAVA)) {
      for (ReplayAction a : ReplayAction.values()) {
        l.setAction(a);
        if (a != ReplayAction.NONE && a != ReplayAction.RECORD) l.setTargetIndices(target, 3);
        assertEquals(2, l.route(r, lg, 3, new int[3 * K], new float[3 * K]), a.toString());
      }
    }
  }

  @Test
  void targetsReportTheirTokens() {
    RouterReplay l = new ReplayRegistry().addLayer(LayerKey.mtp(2), 16, 4);
    assertEquals(16, l.experts());
    assertEquals(4, l.topK());
    assertEquals(-1, l.targetTokens());
    assertFalse(l.hasTarget());
    l.setTargetIndices(new int[] {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 3);
    assertEquals(3, l.targetTokens());
    assertEquals("RouterReplay{MTP layer 2, top-4 of 16, NONE, target [3, 4], backward queue=1, recorded=0}", l.toString());
    RouterReplay n = new ReplayRegistry().addLayer(LayerKey.decoder(1), 16, 4, true);
    assertEquals("RouterReplay{decoder layer 1, top-4 of 16, NONE, never-replay, backward queue=0, recorded=0}", n.toString());
  }

  @Test
  void layerKeysOrderByKindThenNumberAndHashByBoth() {
    LayerKey d1 = LayerKey.decoder(1), d2 = LayerKey.decoder(2), m0 = LayerKey.mtp(0), m1 = LayerKey.mtp(1);
    assertTrue(d1.compareTo(d2) < 0);
    assertTrue(d2.compareTo(d1) > 0);
    assertTrue(d2.compareTo(m0) < 0, "decoder layers before MTP layers");
    assertTrue(m0.compareTo(d2) > 0);
    assertEquals(0, m1.compareTo(LayerKey.mtp(1)));
    assertEquals(Arrays.asList(d1, d2, m0, m1), new java.util.ArrayList<>(new TreeSet<>(Arrays.asList(m1, d2, m0, d1))));
    assertEquals(d1.hashCode(), LayerKey.decoder(1).hashCode());
    Set<Integer> hashes = new HashSet<>();
    for (LayerKind kind : LayerKind.values())
      for (int n = 0; n < 8; n++) hashes.add(LayerKey.of(kind, n).hashCode());
    assertEquals(16, hashes.size(), "hash codes tell kind and number apart");
    assertNotEquals(d1, m1);
    assertEquals("decoder layer 1", d1.toString());
    assertEquals("MTP layer 0", m0.toString());
    assertEquals("decoder", LayerKind.DECODER.label());
    assertEquals("mtp", LayerKind.MTP.label());
  }

  @Test
  void registrySettingsAreReadBack() {
    ReplayRegistry reg = ReplayRegistry.builder().backwardQueue(BackwardQueue.values()[BackwardQueue.values().length - 1])
        .recordMode(RecordMode.APPEND).minusOneRows(MinusOneRows.ARANGE).build();
    assertEquals(BackwardQueue.values()[BackwardQueue.values().length - 1], reg.backwardQueue());
    assertEquals(RecordMode.APPEND, reg.recordMode());
    assertEquals(MinusOneRows.ARANGE, reg.minusOneRows());
    assertFalse(reg.hasLayer(LayerKey.decoder(0)));
    reg.addLayer(LayerKey.decoder(0), CONFIG);
    assertTrue(reg.hasLayer(LayerKey.decoder(0)));
    assertFalse(reg.hasLayer(LayerKey.mtp(0)));
    assertTrue(reg.toString().startsWith("ReplayRegistry{" + reg.backwardQueue() + ", APPEND, minus_one_rows ARANGE, [RouterReplay{"),
        reg.toString());
    Suspension s = reg.suspend();
    assertFalse(s.isClosed());
    s.close();
    assertTrue(s.isClosed());
  }
}
