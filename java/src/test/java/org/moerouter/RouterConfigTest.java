// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class RouterConfigTest {
  static void assertRejected(RouterConfig.Builder b, String fragment) {
    MoeRouterException e = assertThrows(MoeRouterException.class, b::build);
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertTrue(e.getMessage().startsWith("invalid router config: "), e.getMessage());
    assertTrue(e.getMessage().contains(fragment), "'" + e.getMessage() + "' lacks '" + fragment + "'");
  }

  @Test
  void rejectsInvalidConfigurationsWithClearMessages() {
    assertRejected(RouterConfig.builder(8, 9), "topK (9) exceeds the number of experts (8)");
    assertRejected(RouterConfig.builder(0, 1), "experts must be in [1, 4096], got 0");
    assertRejected(RouterConfig.builder(5000, 1), "experts must be in [1, 4096]");
    assertRejected(RouterConfig.builder(128, 65), "topK must be in [1, 64]");
    assertRejected(RouterConfig.builder(100, 8).groups(8, 4), "experts (100) not divisible by groups (8)");
    assertRejected(RouterConfig.builder(64, 6).groups(8, 4), "topK (6) not divisible by group topK (4)");
    assertRejected(RouterConfig.builder(64, 8).groups(8, 9), "group topK must be in [1, groups=8]");
    assertRejected(RouterConfig.builder(16, 8).groups(8, 1), "exceeds the group size");
    assertRejected(RouterConfig.builder(16, 2).expertBias(new float[16]), "sigmoid score function only");
    assertRejected(RouterConfig.builder(16, 2).scoreFunction(ScoreFunction.SIGMOID).expertBias(new float[3]),
        "3 entries, expected 16");
    assertRejected(RouterConfig.builder(16, 2).scoreFunction(ScoreFunction.SIGMOID).preSoftmax(true), "pre-softmax");
    assertRejected(RouterConfig.builder(16, 2).scale(0f), "scale must be finite and > 0");
    assertRejected(RouterConfig.builder(16, 2).scale(Float.NaN), "scale");
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
}
