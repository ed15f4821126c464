// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.MoeRouterException;

/**
 * The exact limits of a routing trace: the expert counts where the stored width changes, top-k equal to
 * the expert count, the largest expert id, samples given from an offset, masks growing past their first
 * size. Written against the mutants PIT found surviving (docs/testing.md).
 */
class TraceBoundsTest {
  @TempDir Path dir;

  static RoutingTrace.Builder builder(int experts, int k, int... layers) {
    return RoutingTrace.builder("m", experts, k, layers, "sigmoid");
  }

  @Test
  void builderLimitsAreInclusive() {
    builder(1, 1, 0).build();
    builder(RoutingTrace.MAX_EXPERTS, 2, 0).build();
    builder(4, 4, 0).build();
    assertThrows(MoeRouterException.class, () -> builder(0, 1, 0));
    assertThrows(MoeRouterException.class, () -> builder(RoutingTrace.MAX_EXPERTS + 1, 1, 0));
    assertThrows(MoeRouterException.class, () -> builder(4, 0, 0));
    assertThrows(MoeRouterException.class, () -> builder(4, 5, 0));
    assertThrows(MoeRouterException.class, () -> builder(4, 1));
    assertThrows(MoeRouterException.class, () -> builder(4, 1, 3, 3));
  }

  @Test
  void theLargestExpertIdSurvivesAWriteAtEveryWidth() throws Exception {
    for (int experts : new int[] {255, 256, 257, 300, RoutingTrace.MAX_EXPERTS}) {
      int k = 2;
      int[] idx = {experts - 1, 0, experts - 2, experts - 1, 1, experts - 1};
      RoutingTrace t = builder(experts, k, 3, 7).addSample(Arrays.copyOf(idx, 4)).addSample(idx, 2, 1).build();
      Path p = dir.resolve("t" + experts + ".safetensors");
      TraceFiles.write(t, p);
      RoutingTrace back = TraceFiles.read(p);
      assertTrue(back.contentEquals(t), "experts " + experts);
      assertEquals(experts - 1, back.expert(0, 0, 0, 0));
      assertEquals(experts - 1, back.expert(0, 0, 1, 1));
      assertEquals(experts - 2, back.expert(0, 0, 1, 0));
      assertEquals(experts - 2, back.expert(1, 0, 0, 0), "the second sample starts at offset 2 of its array");
      assertEquals(1, back.expert(1, 0, 1, 0));
      assertEquals(experts - 1, back.expert(1, 0, 1, 1));
      assertEquals(experts <= 256 ? "U8" : "U16", TraceTestSupport.headerText(java.nio.file.Files.readAllBytes(p))
          .replaceAll("(?s).*\"indices\":\\{\"dtype\":\"(U8|U16)\".*", "$1"), "experts " + experts);
      assertThrows(MoeRouterException.class, () -> builder(experts, k, 3).addSample(new int[] {experts, 0}));
      assertThrows(MoeRouterException.class, () -> builder(experts, k, 3).addSample(new int[] {0, -1}));
    }
  }

  @Test
  void samplesFromAnOffsetAndMasksGrowingPastTheirFirstSize() throws Exception {
    int k = 2, layers = 1;
    RoutingTrace.Builder b = builder(8, k, 5);
    int[] big = new int[200 * k];
    for (int t = 0; t < 200; t++) {
      big[t * k] = t % 8;
      big[t * k + 1] = (t + 3) % 8;
    }
    byte[] mask = new byte[200];
    Arrays.fill(mask, (byte) 1);
    mask[150] = 0;
    mask[199] = 0;
    b.addSample(big, 0, 10);  // no mask yet
    b.addSample(big, 10 * k, 190, mask, 10);  // a mask arrives with rows beyond 64
    for (int s = 0; s < 20; s++) b.addSample(big, 0, 1);  // offsets grow past 16 samples
    RoutingTrace t = b.build();
    assertEquals(22, t.samples());
    assertTrue(t.recorded(0, 9));
    assertTrue(t.recorded(1, 139));
    assertFalse(t.recorded(1, 140), "mask[150] applies to token 140 of sample 1");
    assertFalse(t.recorded(1, 189));
    assertTrue(t.recorded(21, 0));
    assertEquals(big[12 * k + 1], t.expert(1, 2, 0, 1));
    // A masked row stores 0..k-1 (the ARANGE convention) and reads back as such.
    assertEquals(0, t.expert(1, 140, 0, 0));
    assertEquals(1, t.expert(1, 140, 0, 1));
    Path p = dir.resolve("m.safetensors");
    TraceFiles.write(t, p);
    assertTrue(TraceFiles.read(p).contentEquals(t));
    assertThrows(MoeRouterException.class, () -> builder(8, k, 5).addSample(big, 0, 201));
    assertThrows(MoeRouterException.class, () -> builder(8, k, 5).addSample(big, -1, 1));
    assertThrows(MoeRouterException.class, () -> builder(8, k, 5).addSample(big, 0, 10, new byte[9], 0));
    assertThrows(MoeRouterException.class, () -> builder(8, k, 5).addSample(big, 0, 10, new byte[10], 1));
    assertThrows(MoeRouterException.class, () -> builder(8, k, 5).addSample(big, 0, 1, new byte[] {2}, 0));
    assertThrows(MoeRouterException.class, () -> builder(8, k, 5).addSample(new int[3]));
    int[] exact = Arrays.copyOf(big, 10 * k);
    builder(8, k, 5).addSample(exact, 0, 10, new byte[10], 0);  // exactly enough
    assertEquals(layers, t.layerIds().length);
  }

  @Test
  void contentEqualsComparesEveryPart() {
    int[] a = {0, 1, 2, 3};
    RoutingTrace t = builder(8, 2, 1).addSample(a).build();
    assertTrue(t.contentEquals(builder(8, 2, 1).addSample(a).build()));
    assertFalse(t.contentEquals(builder(8, 2, 1).addSample(new int[] {0, 1, 2, 4}).build()), "an index");
    assertFalse(t.contentEquals(builder(9, 2, 1).addSample(a).build()), "experts");
    assertFalse(t.contentEquals(builder(8, 2, 2).addSample(a).build()), "layer ids");
    assertFalse(t.contentEquals(builder(8, 2, 1).addSample(Arrays.copyOf(a, 2)).addSample(new int[] {2, 3}).build()),
        "sample offsets");
    assertFalse(t.contentEquals(builder(8, 2, 1).addSample(a, new byte[] {1, 0}).build()), "mask");
    assertFalse(t.contentEquals(RoutingTrace.builder("other", 8, 2, new int[] {1}, "sigmoid").addSample(a).build()), "model");
    assertFalse(t.contentEquals(RoutingTrace.builder("m", 8, 2, new int[] {1}, "softmax").addSample(a).build()), "score");
    assertArrayEquals(new int[] {1}, t.layerIds());
  }
}
