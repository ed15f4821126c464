// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/** Every golden case on every host backend: indices exact, weights and gradients within 1e-5 relative. */
class GoldenTest {
  static final double REL = 1e-5;
  /**
   * Gradients are differences of float32 products (w * (g - sum w g)); entries much smaller than the
   * row's largest cancel, so they get an absolute floor of 1e-6 of the row maximum. Weights get none.
   */
  static final double GRAD_FLOOR = 1e-6;

  static List<Arguments> cases() {
    List<Arguments> out = new ArrayList<>();
    for (Goldens.Case c : Goldens.all())
      for (Backend b : Backends.host()) out.add(Arguments.of(c, b));
    return out;
  }

  @ParameterizedTest(name = "{0} on {1}")
  @MethodSource("cases")
  void liveRouting(Goldens.Case c, Backend backend) {
    try (MoeRouter r = MoeRouter.create(c.config, backend)) {
      RoutingResult res = r.route(c.logits, c.tokens);
      assertArrayEquals(c.liveIdx, res.indices(), "live indices");
      assertClose("live weights", res.weights(), c.liveWeights, c.config.topK(), 0);
      assertEquals(0, res.nonfiniteRows());
    }
  }

  @ParameterizedTest(name = "{0} on {1}")
  @MethodSource("cases")
  void replayRouting(Goldens.Case c, Backend backend) {
    try (MoeRouter r = MoeRouter.create(c.config, backend)) {
      RoutingResult res = r.replay(c.logits, c.tokens, c.replayIdx, null);
      assertArrayEquals(c.replayIdx, res.indices(), "replay keeps the given experts in order");
      assertClose("replay weights", res.weights(), c.replayWeights, c.config.topK(), 0);
    }
  }

  @ParameterizedTest(name = "{0} on {1}")
  @MethodSource("cases")
  void backwardLiveAndReplay(Goldens.Case c, Backend backend) {
    int experts = c.config.experts();
    try (MoeRouter r = MoeRouter.create(c.config, backend)) {
      float[] grad = new float[c.tokens * experts];
      java.util.Arrays.fill(grad, Float.NaN);  // every element must be written
      r.backward(c.logits, c.tokens, c.liveIdx, c.gradWeights, grad);
      assertClose("live grad logits", grad, c.liveGradLogits, experts, GRAD_FLOOR);
      java.util.Arrays.fill(grad, Float.NaN);
      r.backward(c.logits, c.tokens, c.replayIdx, c.gradWeights, grad);
      assertClose("replay grad logits", grad, c.replayGradLogits, experts, GRAD_FLOOR);
    }
  }

  /** Relative 1e-5 per element, plus an absolute floor of {@code floor} times the row's largest magnitude. */
  static void assertClose(String what, float[] actual, double[] expected, int rowLength, double floor) {
    assertEquals(expected.length, actual.length, what + ": length");
    for (int row = 0; row < expected.length / rowLength; row++) {
      double rowMax = 0;
      for (int j = 0; j < rowLength; j++) rowMax = Math.max(rowMax, Math.abs(expected[row * rowLength + j]));
      for (int j = 0; j < rowLength; j++) {
        int i = row * rowLength + j;
        if (!Backends.close(actual[i], expected[i], REL, floor * rowMax))
          fail(what + ": row " + row + " col " + j + ": got " + actual[i] + ", expected " + expected[i]);
      }
    }
  }
}
