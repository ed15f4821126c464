// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.*;

import org.junit.jupiter.api.Test;
import org.moerouter.Backend;
import org.moerouter.MoeRouter;
import org.moerouter.MoeRouterException;
import org.moerouter.RoutingAgreement;
import org.moerouter.RouterConfig;

class TraceSlicingTest {
  final RoutingTrace trace = TraceTestSupport.random(3, 32, 4, new int[] {1, 2, 3}, new int[] {3, 5, 2, 4});

  @Test
  void packWithPaddingAndMask() {
    int[] cu = {0, 4, 9, 12}; // samples 2, 1, 0 with 2, 0, 0 padding rows
    TraceSlicing.Packed p = TraceSlicing.pack(trace, new int[] {2, 1, 0}, cu, 1, 3);
    assertEquals(12, p.tokens());
    assertEquals(2, p.layers());
    assertArrayEquals(new int[] {2, 3}, p.layerIds());
    assertArrayEquals(new byte[] {1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1}, p.mask());
    int[] idx = p.indices();
    for (int tok = 0; tok < 2; tok++)
      for (int l = 0; l < 2; l++)
        for (int j = 0; j < 4; j++) assertEquals(trace.expert(2, tok, l + 1, j), idx[(tok * 2 + l) * 4 + j]);
    for (int tok = 2; tok < 4; tok++)
      for (int l = 0; l < 2; l++)
        for (int j = 0; j < 4; j++) assertEquals(j, idx[(tok * 2 + l) * 4 + j], "padding rows are 0..k-1");
    for (int j = 0; j < 4; j++) assertEquals(trace.expert(0, 2, 2, j), p.layer(1)[11 * 4 + j]);
    // Padding rows are valid replay input: distinct and in range; masked rows route live.
    try (MoeRouter r = MoeRouter.create(RouterConfig.builder(32, 4).build(), Backend.JAVA)) {
      float[] logits = new float[12 * 32];
      int[] out = new int[12 * 4];
      r.replay(logits, 12, p.layer(0), p.mask(), out, new float[12 * 4]);
    }
  }

  @Test
  void packRejectsOverlongSample() {
    MoeRouterException e = assertThrows(MoeRouterException.class, () -> TraceSlicing.pack(trace, new int[] {1}, new int[] {0, 4}, 0, 3));
    assertEquals("sample 1 has 5 tokens, its packed segment 0 [0, 4) holds 4", e.getMessage());
    assertThrows(MoeRouterException.class, () -> TraceSlicing.pack(trace, new int[] {1}, new int[] {0}, 0, 3));
  }

  @Test
  void microBatchSplits() {
    assertArrayEquals(new int[][] {{0, 1, 2}, {3}}, TraceSlicing.microBatches(trace, 3));
    assertArrayEquals(new int[][] {{0, 1}, {2, 3}}, TraceSlicing.microBatchesByTokens(trace, 8));
    assertArrayEquals(new int[][] {{0}, {1}, {2}, {3}}, TraceSlicing.microBatchesByTokens(trace, 5));
    assertThrows(MoeRouterException.class, () -> TraceSlicing.microBatchesByTokens(trace, 4));
    assertArrayEquals(new int[] {0, 2, 6}, TraceSlicing.cuSeqlens(trace, new int[] {2, 3}));
  }

  @Test
  void selectAndSliceAndMetrics() {
    RoutingTrace sel = trace.select(new int[] {3, 1}, 1, 2);
    assertArrayEquals(new int[] {2}, sel.layerIds());
    assertEquals(4, sel.sampleTokens(0));
    assertEquals(trace.expert(1, 4, 1, 3), sel.expert(1, 4, 0, 3));
    RoutingAgreement.Result same = TraceMetrics.agreement(trace, trace);
    assertEquals(0, same.differingRows());
    RoutingTrace other = TraceTestSupport.random(4, 32, 4, new int[] {1, 2, 3}, new int[] {3, 5, 2, 4});
    RoutingAgreement.Result r = TraceMetrics.agreement(trace, other, RoutingAgreement.Engine.JAVA);
    int[] a = new int[14 * 12], b = new int[14 * 12];
    trace.copyTokens(0, 14, 0, 3, a, 0);
    other.copyTokens(0, 14, 0, 3, b, 0);
    assertEquals(RoutingAgreement.compare(a, b, 14, 3, 4, 32, RoutingAgreement.Engine.JAVA), r);
    assertEquals(r, TraceMetrics.agreement(trace, other));
    assertThrows(MoeRouterException.class, () -> TraceMetrics.agreement(trace, trace.slice(0, 2)));
  }
}
