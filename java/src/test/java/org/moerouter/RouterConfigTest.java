// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

class RouterConfigTest {
  static void assertRejected(RouterConfig.Builder b, String fragment) {
    MoeRouterException e = assertThrows(MoeRouterException.class, b::build);
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertTrue(e.getMessage().startsWith("invalid router config: "), e.getMessage());
    assertTrue(e.getMessage().contains(fragment), "'" + e.getMessage() + "' lacks '" + fragment + "'");
  }

  static RouterConfig.Builder sigmoid(int e, int k) {
    return RouterConfig.builder(e, k).scoreFunction(ScoreFunction.SIGMOID);
  }

  @Test
  void rejectsInvalidConfigurationsWithClearMessages() {
    assertRejected(RouterConfig.builder(8, 9), "topK (9) exceeds the number of experts (8)");
    assertRejected(RouterConfig.builder(0, 1), "experts must be in [1, 4096], got 0");
    assertRejected(RouterConfig.builder(5000, 1), "experts must be in [1, 4096]");
    assertRejected(RouterConfig.builder(128, 65), "topK must be in [1, 64]");
    assertRejected(RouterConfig.builder(100, 8).groups(8, 4), "experts (100) not divisible by groups (8)");
    assertRejected(RouterConfig.builder(64, 8).groups(8, 9), "group topK must be in [1, groups=8]");
    assertRejected(RouterConfig.builder(16, 8).groups(8, 1), "the 1 kept groups of 2 experts hold fewer experts than topK (8)");
    assertRejected(RouterConfig.builder(16, 2).expertBias(new float[16]),
        "expert bias with the softmax score function needs pre-softmax (R = P + b)");
    assertRejected(sigmoid(16, 2).expertBias(new float[3]), "3 entries, expected 16");
    assertRejected(sigmoid(16, 2).preSoftmax(true), "pre-softmax applies to the softmax score function only");
    assertRejected(RouterConfig.builder(16, 2).scale(0f), "scale must be finite and > 0, got 0");
    assertRejected(RouterConfig.builder(16, 2).scale(Float.NaN), "scale must be finite and > 0, got nan");
  }

  /** Every rule of the v2 options (docs/semantics.md sections 1-4). */
  @Test
  void rejectsInvalidV2OptionCombinations() {
    assertRejected(RouterConfig.builder(16, 2).normalize(false),
        "normalize=false needs pre-softmax: softmax post is normalised by construction");
    assertRejected(RouterConfig.builder(16, 2).scoreFunction(ScoreFunction.SQRTSOFTPLUS).preSoftmax(true),
        "pre-softmax applies to the softmax score function only");
    assertRejected(RouterConfig.builder(64, 2).groups(8, 4), "TOPK_SUM sums the top floor(topK / groupTopK) scores of a "
        + "group, which is 0 for topK 2 and groupTopK 4 (use TOP2_SUM or MAX)");
    assertRejected(sigmoid(8, 2).groups(8, 4).groupScore(GroupScore.TOP2_SUM),
        "TOP2_SUM needs at least 2 experts per group, got 1");
    assertRejected(sigmoid(64, 8).groupScore(GroupScore.MAX), "group score MAX applies to group-limited routing only");
    assertRejected(sigmoid(64, 8).groupScore(GroupScore.TOP2_SUM), "group score TOP2_SUM applies to group-limited");
    assertRejected(sigmoid(64, 8).groups(-1, 0), "groups (-1) and group topK (0) must be >= 0");
    assertRejected(sigmoid(130, 2).groups(65, 1), "groups must be in [1, 64], got 65");
    assertRejected(sigmoid(16, 2).expertBias(new float[] {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, Float.NaN, 0}),
        "expert bias[14] is not finite");
    assertThrows(NullPointerException.class, () -> sigmoid(16, 2).nonFinite(null));
    assertThrows(NullPointerException.class, () -> sigmoid(16, 2).minusOneRows(null));
    assertThrows(NullPointerException.class, () -> sigmoid(16, 2).groupScore(null));
  }

  @Test
  void acceptsTheV2OptionsAndAppliesTheSpecDefaults() {
    // k need not be a multiple of Gk any more (m = floor(7 / 2) = 3), only fit in the kept groups.
    RouterConfig k7 = RouterConfig.builder(64, 7).groups(8, 2).build();
    assertEquals(GroupScore.TOPK_SUM, k7.groupScore());
    RouterConfig.builder(64, 8).groups(8, 1).build();  // 1 group of 8 holds k = 8
    RouterConfig.builder(64, 2).groups(8, 4).groupScore(GroupScore.MAX).build();  // MAX needs no m >= 1
    sigmoid(16, 2).groups(8, 8).groupScore(GroupScore.TOP2_SUM).build();  // every group kept: plain routing
    RouterConfig v3 = sigmoid(256, 8).expertBias(new float[256]).groups(8, 4).groupScore(GroupScore.TOP2_SUM)
        .scale(2.5f).build();
    assertTrue(v3.normalize());
    RouterConfig v4 = RouterConfig.builder(256, 6).scoreFunction(ScoreFunction.SQRTSOFTPLUS)
        .expertBias(new float[256]).build();
    assertTrue(v4.normalize(), "sqrtsoftplus normalises by default");
    RouterConfig pre = RouterConfig.builder(64, 6).preSoftmax(true).expertBias(new float[64]).build();
    assertFalse(pre.normalize(), "softmax pre does not normalise by default");
    assertNull(pre.normalizeSetting());
    assertTrue(pre.toBuilder().normalize(true).build().normalize());
    assertTrue(RouterConfig.builder(8, 2).build().normalize(), "softmax post is normalised by construction");
    assertTrue(RouterConfig.builder(8, 2).normalize(true).build().normalize());
    assertFalse(sigmoid(8, 2).normalize(false).build().normalize());
    // toBuilder keeps "unset": switching the score function then takes the new score's default
    assertTrue(pre.toBuilder().scoreFunction(ScoreFunction.SIGMOID).preSoftmax(false).build().normalize());
    RouterConfig all = sigmoid(32, 4).nonFinite(NonFinitePolicy.ZERO).minusOneRows(MinusOneRows.ARANGE).build();
    assertEquals(all, all.toBuilder().build());
    assertNotEquals(all, all.toBuilder().nonFinite(NonFinitePolicy.ERROR).build());
    assertNotEquals(all, all.toBuilder().minusOneRows(MinusOneRows.LIVE).build());
    assertEquals(sigmoid(8, 2).build(), sigmoid(8, 2).normalize(true).build(), "the same effective normalize");
    assertTrue(all.toString().contains("nonFinite=ZERO") && all.toString().contains("minusOneRows=ARANGE"), all.toString());
  }

  @Test
  void acceptsTypicalModelConfigs() {
    RouterConfig dsv3 = RouterConfig.builder(256, 8).scoreFunction(ScoreFunction.SIGMOID)
        .expertBias(new float[256]).groups(8, 4).scale(2.5f).build();
    assertEquals(8, dsv3.groups());
    assertTrue(dsv3.grouped());
    RouterConfig qwen = RouterConfig.builder(128, 8).build();
    assertEquals(ScoreFunction.SOFTMAX, qwen.scoreFunction());
    assertEquals(1f, qwen.scale());
    assertEquals(qwen, RouterConfig.builder(128, 8).build());
  }

  @Test
  void biasIsCopiedNotShared() {
    float[] bias = new float[4];
    RouterConfig c = RouterConfig.builder(4, 1).scoreFunction(ScoreFunction.SIGMOID).expertBias(bias).build();
    bias[0] = 5f;
    assertEquals(0f, c.expertBias()[0]);
    c.expertBias()[1] = 7f;
    assertEquals(0f, c.expertBias()[1]);
  }

  /** One configuration as the raw fields both validators see. */
  static final class Raw {
    final int e, k, groups, groupTopK;
    final ScoreFunction score;
    final boolean pre;
    final float scale;
    final float[] bias;
    final Boolean normalize;
    final GroupScore groupScore;

    Raw(int e, int k, ScoreFunction score, boolean pre, int groups, int groupTopK, float scale, float[] bias,
        Boolean normalize, GroupScore groupScore) {
      this.e = e;
      this.k = k;
      this.score = score;
      this.pre = pre;
      this.groups = groups;
      this.groupTopK = groupTopK;
      this.scale = scale;
      this.bias = bias;
      this.normalize = normalize;
      this.groupScore = groupScore;
    }

    RouterConfig.Builder builder() {
      RouterConfig.Builder b = RouterConfig.builder(e, k).scoreFunction(score).preSoftmax(pre).groups(groups, groupTopK)
          .scale(scale).expertBias(bias).groupScore(groupScore);
      if (normalize != null) b.normalize(normalize);
      return b;
    }

    /** moe_config_validate's message, or null when it accepts. */
    String nativeMessage() {
      int st = RouterNative.moe_jni_config_validate(e, k, score.code, pre ? 1 : 0, groups, groupTopK, scale, bias,
          normalize == null ? 0 : normalize ? 1 : 2, groupScore.code, 0, 0);
      if (st == 0) return null;
      assertEquals(Status.INVALID_ARGUMENT.code(), st);
      return RouterNative.moe_last_error_message().getString();
    }

    @Override
    public String toString() {
      return e + "/" + k + " " + score + (pre ? " pre" : "") + " G=" + groups + "/" + groupTopK + " scale " + scale
          + (bias != null ? " bias" : "") + " normalize " + normalize + " " + groupScore;
    }
  }

  /** RouterConfig.build() and moe_config_validate reject the same configurations with the same text. */
  @Test
  void javaAndNativeValidationAgreeRuleForRule() {
    ScoreFunction sm = ScoreFunction.SOFTMAX, sg = ScoreFunction.SIGMOID, sq = ScoreFunction.SQRTSOFTPLUS;
    GroupScore ts = GroupScore.TOPK_SUM, t2 = GroupScore.TOP2_SUM, mx = GroupScore.MAX;
    float[] b16 = new float[16], b64 = new float[64], nan16 = new float[16];
    nan16[3] = Float.POSITIVE_INFINITY;
    List<Raw> raws = new ArrayList<>(List.of(
        new Raw(0, 1, sm, false, 0, 0, 1f, null, null, ts),
        new Raw(5000, 1, sm, false, 0, 0, 1f, null, null, ts),
        new Raw(16, 0, sm, false, 0, 0, 1f, null, null, ts),
        new Raw(16, 65, sm, false, 0, 0, 1f, null, null, ts),
        new Raw(16, 17, sm, false, 0, 0, 1f, null, null, ts),
        new Raw(16, 2, sg, true, 0, 0, 1f, null, null, ts),
        new Raw(16, 2, sq, true, 0, 0, 1f, null, null, ts),
        new Raw(16, 2, sm, false, 0, 0, 1f, null, false, ts),
        new Raw(16, 2, sm, false, 0, 0, 1f, b16, null, ts),
        new Raw(16, 2, sm, false, 0, 0, 0f, null, null, ts),
        new Raw(16, 2, sm, false, 0, 0, -1.5f, null, null, ts),
        new Raw(16, 2, sm, false, 0, 0, Float.NaN, null, null, ts),
        new Raw(16, 2, sm, false, 0, 0, Float.POSITIVE_INFINITY, null, null, ts),
        new Raw(16, 2, sm, false, 0, 0, -1e-7f, null, null, ts),
        new Raw(16, 2, sg, false, -1, 2, 1f, null, null, ts),
        new Raw(16, 2, sg, false, 65, 1, 1f, null, null, ts),
        new Raw(100, 8, sg, false, 8, 4, 1f, null, null, ts),
        new Raw(64, 8, sg, false, 8, 0, 1f, null, null, ts),
        new Raw(64, 8, sg, false, 8, 9, 1f, null, null, ts),
        new Raw(16, 8, sg, false, 8, 1, 1f, null, null, ts),
        new Raw(64, 2, sg, false, 8, 4, 1f, null, null, ts),
        new Raw(8, 2, sg, false, 8, 4, 1f, null, null, t2),
        new Raw(64, 8, sg, false, 0, 0, 1f, null, null, mx),
        new Raw(64, 8, sq, false, 0, 0, 1f, null, null, t2),
        new Raw(64, 8, sq, false, 1, 1, 1f, null, null, t2),  // G = 1: valid, and not group-limited
        new Raw(16, 2, sg, false, 0, 0, 1f, nan16, null, ts),
        // accepted by both
        new Raw(64, 7, sm, false, 8, 2, 1f, null, null, ts),
        new Raw(64, 2, sg, false, 8, 4, 1f, null, null, mx),
        new Raw(64, 6, sm, true, 8, 3, 2f, b64, true, t2),
        new Raw(16, 2, sq, false, 8, 8, 1f, b16, false, t2),
        new Raw(16, 1, sm, false, 0, 0, 1f, null, true, ts)));
    int rejected = 0;
    for (Raw r : raws) {
      String javaMessage;
      try {
        r.builder().build();
        javaMessage = null;
      } catch (MoeRouterException ex) {
        javaMessage = ex.getMessage().substring("invalid router config: ".length());
      }
      assertEquals(javaMessage, r.nativeMessage(), r.toString());
      if (javaMessage != null) rejected++;
    }
    assertEquals(25, rejected, "every rejected configuration above is rejected");
  }
}
