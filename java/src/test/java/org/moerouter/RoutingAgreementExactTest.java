// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * {@link RoutingAgreement.Accumulator} on a hand-computed case, on every engine present: each count, fraction and
 * message is exact, across chunks, so that an off-by-one in an overlap, a per-layer sum or the token numbering
 * of a later chunk changes a result (these closed the PIT survivors in {@code RoutingAgreement$Accumulator}).
 */
class RoutingAgreementExactTest {
  // 3 tokens, 2 layers, k = 2, 4 experts. Per (token, layer) overlap |A ∩ B|:
  //   token 0: layer 0 {0,1} vs {1,0} -> 2, layer 1 {2,3} vs {2,0} -> 1 (differs)
  //   token 1: layer 0 {0,1} vs {2,3} -> 0 (differs), layer 1 {0,1} vs {1,0} -> 2
  //   token 2: layer 0 {3,2} vs {2,3} -> 2, layer 1 {1,0} vs {1,0} -> 2
  private static final int[] A = {0, 1, 2, 3, 0, 1, 0, 1, 3, 2, 1, 0};
  private static final int[] B = {1, 0, 2, 0, 2, 3, 1, 0, 2, 3, 1, 0};

  private static List<RoutingAgreement.Engine> engines() {
    List<RoutingAgreement.Engine> out = new ArrayList<>(List.of(RoutingAgreement.Engine.JAVA));
    if (NativeLibrary.loaded()) out.add(RoutingAgreement.Engine.NATIVE);
    return out;
  }

  @Test
  void countsAndFractionsAreExactAcrossChunks() {
    for (RoutingAgreement.Engine engine : engines()) {
      RoutingAgreement.Accumulator acc = RoutingAgreement.accumulator(2, 2, 4, engine);
      assertEquals(engine == RoutingAgreement.Engine.NATIVE, acc.isNative());
      assertSame(acc, acc.add(A, B, 0));
      RoutingAgreement.Result empty = acc.result();
      assertEquals(0, empty.tokens());
      assertEquals(0.0, empty.differingRowFraction(0));
      assertEquals(0.0, empty.differingRowFraction());
      assertEquals(0.0, empty.differingTokenFraction());
      assertEquals(1.0, empty.meanOverlap(1));
      assertEquals(1.0, empty.meanOverlap());

      assertSame(acc, acc.add(Arrays.copyOf(A, 8), Arrays.copyOf(B, 8), 2));
      RoutingAgreement.Result two = acc.result();
      assertEquals(2, two.tokens());
      assertEquals(1, two.differingRows(0));
      assertEquals(1, two.differingRows(1));
      assertEquals(2, two.overlapTotal(0));
      assertEquals(3, two.overlapTotal(1));
      assertEquals(2, two.differingTokens());

      acc.add(Arrays.copyOfRange(A, 8, 12), Arrays.copyOfRange(B, 8, 12), 1);
      RoutingAgreement.Result r = acc.result();
      String e = engine.toString();
      assertEquals(3, r.tokens(), e);
      assertEquals(2, r.layers(), e);
      assertEquals(2, r.topK(), e);
      assertEquals(1, r.differingRows(0), e);
      assertEquals(1, r.differingRows(1), e);
      assertEquals(2, r.differingRows(), e);
      assertEquals(4, r.overlapTotal(0), e);
      assertEquals(5, r.overlapTotal(1), e);
      assertEquals(2, r.differingTokens(), e);
      assertEquals(1.0 / 3, r.differingRowFraction(0), e);
      assertEquals(2.0 / 6, r.differingRowFraction(), e);
      assertEquals(2.0 / 3, r.differingTokenFraction(), e);
      assertEquals(4.0 / 6, r.meanOverlap(0), e);
      assertEquals(5.0 / 6, r.meanOverlap(1), e);
      assertEquals(9.0 / 12, r.meanOverlap(), e);
      assertEquals("RoutingAgreement{tokens=3, layers=2, k=2, differingRows=0.333333, differingTokens=0.666667, meanOverlap=0.750000}",
          r.toString());
      // The snapshot does not move when the accumulator does; one call over everything gives the same result.
      assertNotEquals(two, r);
      RoutingAgreement.Result whole = RoutingAgreement.compare(A, B, 3, 2, 2, 4, engine);
      assertEquals(r, whole, e);
      assertEquals(r.hashCode(), whole.hashCode(), e);
    }
  }

  @Test
  void aBadRowInALaterChunkIsNamedAcrossChunksAndAddsNothing() {
    for (RoutingAgreement.Engine engine : engines()) {
      RoutingAgreement.Accumulator acc = RoutingAgreement.accumulator(2, 2, 4, engine).add(A, B, 3);
      RoutingAgreement.Result before = acc.result();
      // Token 1 of the chunk (token 4 overall): the duplicate sits in the last position of b's layer-1 row.
      int[] b2 = {0, 1, 2, 3, 0, 1, 3, 3};
      MoeRouterException x = assertThrows(MoeRouterException.class, () -> acc.add(A, b2, 2));
      assertEquals(Status.INVALID_REPLAY, x.status());
      assertEquals("routing agreement: selection b token 4 layer 1: expert 3 appears twice", x.getMessage(), engine.toString());
      int[] a2 = {0, 1, 2, 3, 0, 4, 0, 1};
      x = assertThrows(MoeRouterException.class, () -> acc.add(a2, B, 2));
      assertEquals("routing agreement: selection a token 4 layer 0: expert 4 out of range [0, 4)", x.getMessage());
      int[] a3 = {-1, 1, 2, 3};
      x = assertThrows(MoeRouterException.class, () -> acc.add(a3, B, 1));
      assertEquals("routing agreement: selection a token 3 layer 0: expert -1 out of range [0, 4)", x.getMessage());
      assertEquals(before, acc.result());
      // The largest expert id is in range.
      acc.add(new int[] {3, 0, 3, 2}, new int[] {0, 3, 1, 2}, 1);
      assertEquals(4, acc.result().tokens());
      assertEquals(2, acc.result().differingRows(1));
      assertEquals(3, acc.result().differingTokens());
    }
  }

  @Test
  void sizesAreCheckedAtTheirLimits() {
    RoutingAgreement.Accumulator acc = RoutingAgreement.accumulator(2, 2, 4, RoutingAgreement.Engine.JAVA);
    MoeRouterException x = assertThrows(MoeRouterException.class, () -> acc.add(new int[7], new int[8], 2));
    assertEquals(Status.INVALID_ARGUMENT, x.status());
    assertEquals("a holds 7 ints, needs 8", x.getMessage());
    x = assertThrows(MoeRouterException.class, () -> acc.add(new int[8], new int[7], 2));
    assertEquals("b holds 7 ints, needs 8", x.getMessage());
    x = assertThrows(MoeRouterException.class, () -> acc.add(new int[8], new int[8], -1));
    assertEquals("tokens must be >= 0, got -1", x.getMessage());
    x = assertThrows(MoeRouterException.class, () -> RoutingAgreement.accumulator(0, 2, 4, RoutingAgreement.Engine.JAVA));
    assertEquals("layers must be >= 1, got 0", x.getMessage());
    x = assertThrows(MoeRouterException.class, () -> RoutingAgreement.accumulator(1, 0, 4, RoutingAgreement.Engine.JAVA));
    assertEquals("k must be in [1, 64], got 0", x.getMessage());
    x = assertThrows(MoeRouterException.class, () -> RoutingAgreement.accumulator(1, 65, 100, RoutingAgreement.Engine.JAVA));
    assertEquals("k must be in [1, 64], got 65", x.getMessage());
    x = assertThrows(MoeRouterException.class, () -> RoutingAgreement.accumulator(1, 3, 2, RoutingAgreement.Engine.JAVA));
    assertEquals("experts (2) must be >= k (3)", x.getMessage());
    // k = 64 = experts and a single layer: every row identical, every token agrees.
    int[] all = new int[64];
    for (int i = 0; i < 64; i++) all[i] = 63 - i;
    int[] sorted = new int[64];
    for (int i = 0; i < 64; i++) sorted[i] = i;
    RoutingAgreement.Result r = RoutingAgreement.accumulator(1, 64, 64, RoutingAgreement.Engine.JAVA).add(all, sorted, 1).result();
    assertEquals(64, r.overlapTotal(0));
    assertEquals(0, r.differingTokens());
    assertArrayEquals(new long[] {0}, new long[] {r.differingRows(0)});
  }
}
