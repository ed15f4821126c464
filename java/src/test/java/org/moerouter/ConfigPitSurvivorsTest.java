// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashSet;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/**
 * The value types' limits, equality and text that PIT showed no test pinned down (RouterConfig, RoutingResult,
 * RoutingAgreement.Result, Status; docs/testing.md lists each mutant): each rule at its exact boundary, both sides.
 */
class ConfigPitSurvivorsTest {

  static void invalid(String message, Executable call) {
    MoeRouterException x = assertThrows(MoeRouterException.class, call);
    assertEquals(Status.INVALID_ARGUMENT, x.status());
    assertEquals("invalid router config: " + message, x.getMessage());
  }

  @Test
  void routerConfigLimitsAreInclusive() {
    RouterConfig.builder(1, 1).build();
    RouterConfig.builder(RouterConfig.MAX_EXPERTS, RouterConfig.MAX_TOP_K).build();
    invalid("experts must be in [1, 4096], got 0", () -> RouterConfig.builder(0, 1).build());
    invalid("experts must be in [1, 4096], got 4097", () -> RouterConfig.builder(4097, 1).build());
    invalid("topK must be in [1, 64], got 0", () -> RouterConfig.builder(8, 0).build());
    invalid("topK must be in [1, 64], got 65", () -> RouterConfig.builder(128, 65).build());
    // No groups: (0, 0) and (1, 0) both mean "not grouped"; (1, 1) and (G, G) are legal and keep every group.
    for (int[] g : new int[][] {{0, 0}, {1, 0}, {1, 1}, {4, 4}}) {
      RouterConfig c = RouterConfig.builder(64, 6).groups(g[0], g[1]).build();
      assertFalse(c.grouped(), g[0] + "," + g[1]);
      assertEquals("RouterConfig{experts=64, topK=6, score=softmax}", c.toString());
    }
    assertTrue(RouterConfig.builder(64, 6).groups(4, 3).build().grouped());
    RouterConfig.builder(64 * 64, 6).groups(RouterConfig.MAX_GROUPS, 1).build();
    invalid("groups must be in [1, 64], got 128", () -> RouterConfig.builder(128 * 2, 6).groups(128, 1).build());
    // TOPK_SUM needs topK / groupTopK >= 1: 2 / 2 = 1 is enough.
    assertTrue(RouterConfig.builder(8, 2).groups(4, 2).build().grouped());
    invalid("TOPK_SUM sums the top floor(topK / groupTopK) scores of a group, which is 0 for topK 2 and groupTopK 3"
        + " (use TOP2_SUM or MAX)", () -> RouterConfig.builder(12, 2).groups(4, 3).build());
    // C's %g in the scale message: two exponent digits, the sign always written.
    invalid("scale must be finite and > 0, got -1e+10", () -> RouterConfig.builder(8, 2).scale(-1e10f).build());
    assertEquals("1e+10", RouterConfig.Builder.gFormat(1e10));
    assertEquals("1e+09", RouterConfig.Builder.gFormat(1e9));
    assertEquals("-1e-10", RouterConfig.Builder.gFormat(-1e-10));
    assertEquals("1.23457e+100", RouterConfig.Builder.gFormat(1.23457e100));
  }

  @Test
  void routerConfigAccessorsEqualityAndText() {
    RouterConfig plain = RouterConfig.builder(64, 6).build();
    assertFalse(plain.hasExpertBias());
    assertFalse(plain.acceptsExpertBias(), "softmax post has no bias");
    assertTrue(RouterConfig.builder(64, 6).preSoftmax(true).build().acceptsExpertBias());
    assertTrue(RouterConfig.builder(64, 6).scoreFunction(ScoreFunction.SIGMOID).build().acceptsExpertBias());
    RouterConfig.Builder b = RouterConfig.builder(64, 6).preSoftmax(true).normalize(false);
    assertSame(b, b.normalizeDefault());
    assertEquals(RouterConfig.builder(64, 6).preSoftmax(true).build(), b.build());

    RouterConfig full = RouterConfig.builder(64, 6).preSoftmax(true).expertBias(new float[64]).normalize(true).groups(8, 2)
        .groupScore(GroupScore.MAX).scale(2.5f).nonFinite(NonFinitePolicy.ZERO).minusOneRows(MinusOneRows.ARANGE).build();
    assertTrue(full.hasExpertBias());
    assertEquals("RouterConfig{experts=64, topK=6, score=softmax, preSoftmax, expertBias, normalize=true, groups=8,"
        + " groupTopK=2, groupScore=MAX, scale=2.5, nonFinite=ZERO, minusOneRows=ARANGE}", full.toString());
    RouterConfig same = full.toBuilder().build();
    assertEquals(full, same);
    assertEquals(full.hashCode(), same.hashCode());
    assertNotEquals(full, (Object) full.toString());
    float[] bias = new float[64];
    bias[3] = 0.5f;
    RouterConfig otherBias = full.toBuilder().expertBias(bias).build();
    assertNotEquals(full, otherBias);
    assertNotEquals(full.hashCode(), otherBias.hashCode());
    assertNotEquals(full.hashCode(), full.toBuilder().scale(3f).build().hashCode());
  }

  @Test
  void routingResultAccessorsAndBounds() {
    try (MoeRouter r = MoeRouter.create(RouterConfig.builder(8, 2).build(), Backend.JAVA)) {
      float[] l = ReplayTest.logits(3, 8, 2);
      RoutingResult res = r.route(l, 3);
      assertEquals(3, res.tokens());
      assertEquals(2, res.topK());
      for (int t = 0; t < 3; t++)
        for (int j = 0; j < 2; j++) {
          assertEquals(res.indices()[t * 2 + j], res.expert(t, j));
          assertEquals(res.weights()[t * 2 + j], res.weight(t, j));
        }
      assertTrue(res.expert(2, 1) != res.expert(2, 0));
      for (int[] bad : new int[][] {{-1, 0}, {3, 0}, {0, -1}, {0, 2}}) {
        IndexOutOfBoundsException x = assertThrows(IndexOutOfBoundsException.class, () -> res.expert(bad[0], bad[1]));
        assertEquals("token " + bad[0] + ", slot " + bad[1] + " outside [3, 2]", x.getMessage());
        assertThrows(IndexOutOfBoundsException.class, () -> res.weight(bad[0], bad[1]));
      }
    }
  }

  @Test
  void agreementResultsCompareByValue() {
    int[] a = {0, 1, 2, 3, 0, 1};
    int[] b = {0, 1, 2, 0, 3, 1};
    RoutingAgreement.Result r = RoutingAgreement.compare(a, b, 3, 1, 2, 4, RoutingAgreement.Engine.JAVA);
    assertEquals(r, RoutingAgreement.compare(a, b, 3, 1, 2, 4, RoutingAgreement.Engine.JAVA));
    assertEquals(r.hashCode(), RoutingAgreement.compare(a, b, 3, 1, 2, 4, RoutingAgreement.Engine.JAVA).hashCode());
    assertNotEquals(r, (Object) r.toString());
    // Distinct results hash apart (a constant hash would make every map of results one bucket).
    Set<Integer> hashes = new HashSet<>();
    for (int t = 0; t <= 3; t++) hashes.add(RoutingAgreement.compare(a, b, t, 1, 2, 4, RoutingAgreement.Engine.JAVA).hashCode());
    hashes.add(RoutingAgreement.compare(a, a, 3, 1, 2, 4, RoutingAgreement.Engine.JAVA).hashCode());
    assertEquals(5, hashes.size(), hashes.toString());
  }

  @Test
  void statusFromCode() {
    for (Status s : Status.values()) assertSame(s, Status.fromCode(s.code()));
    assertSame(Status.UNKNOWN, Status.fromCode(12345));
  }
}
