// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every goldens_v2 case on every host backend, for what docs/semantics.md sections 1-5 define: live
 * indices (exact, order included), live and replay weights, live and replay logit gradients (1e-5
 * norm-relative, the README's rule), the per-row non-finite flags, tokens per expert where no dropping
 * applies, and for non-finite ERROR cases the rejection naming the expected row with nothing written.
 * bf16 cases also run through the bf16 input path. Section 6 (padding, counts, losses, dropping, bias
 * update) is {@link GoldenV2TrainingTest}; {@link #everyExpectedOutputIsChecked} fails on an output file
 * that neither compares.
 */
class GoldenV2Test {
  static final double NORM_REL = 1e-5;

  static List<Arguments> routed() {
    List<Arguments> out = new ArrayList<>();
    for (GoldensV2.Case c : GoldensV2.all())
      if (!c.error())
        for (Backend b : Backends.host()) {
          out.add(Arguments.of(c, b, LogitsType.FP32));
          if (c.bf16) out.add(Arguments.of(c, b, LogitsType.BF16));
        }
    return out;
  }

  static List<Arguments> rejected() {
    List<Arguments> out = new ArrayList<>();
    for (GoldensV2.Case c : GoldensV2.all())
      if (c.error())
        for (Backend b : Backends.host()) out.add(Arguments.of(c, b, LogitsType.FP32));
    return out;
  }

  static List<GoldensV2.Case> all() {
    return GoldensV2.all();
  }

  /** Forward of one case: live (replay == null) or replay, through the fp32 or the bf16 API. */
  static long forward(MoeRouter r, GoldensV2.Case c, LogitsType type, int[] replay, int[] idx, float[] w, byte[] rows) {
    if (type == LogitsType.BF16) {
      short[] h = c.logitsBf16();
      return replay == null ? r.route(h, type, c.tokens, idx, w, rows) : r.replay(h, type, c.tokens, replay, null, idx, w, rows);
    }
    return replay == null ? r.route(c.logits, c.tokens, idx, w, rows) : r.replay(c.logits, c.tokens, replay, null, idx, w, rows);
  }

  static void backward(MoeRouter r, GoldensV2.Case c, LogitsType type, int[] idx, byte[] rows, float[] grad) {
    backward(r, c, type, idx, rows, c.gradWeights, grad);
  }

  static void backward(MoeRouter r, GoldensV2.Case c, LogitsType type, int[] idx, byte[] rows, float[] dw,
      float[] grad) {
    if (type == LogitsType.BF16) r.backward(c.logitsBf16(), type, c.tokens, idx, dw, rows, grad);
    else r.backward(c.logits, c.tokens, idx, dw, rows, grad);
  }

  @ParameterizedTest(name = "{0} on {1} ({2})")
  @MethodSource("routed")
  void liveRoutingMatchesTheReference(GoldensV2.Case c, Backend backend, LogitsType type) {
    int k = c.config.topK();
    try (MoeRouter r = MoeRouter.create(c.config, backend)) {
      int[] idx = new int[c.tokens * k];
      float[] w = new float[c.tokens * k];
      byte[] rows = new byte[c.tokens];
      long nonfinite = forward(r, c, type, null, idx, w, rows);
      assertIndices("live indices", c.liveIdx, idx, k);
      assertNormClose("live weights", w, c.liveWeights);
      assertRows("live non-finite rows", c.liveNonfiniteRows, rows, nonfinite, c);
      if (c.tokensPerExpert != null && !c.json.path("capacity_factor").isNumber())
        assertArrayEquals(c.tokensPerExpert, r.tokensPerExpert(idx, c.tokens, new int[c.config.experts()]),
            "tokens per expert");
    }
  }

  @ParameterizedTest(name = "{0} on {1} ({2})")
  @MethodSource("routed")
  void replayMatchesTheReference(GoldensV2.Case c, Backend backend, LogitsType type) {
    int k = c.config.topK();
    try (MoeRouter r = MoeRouter.create(c.config, backend)) {
      int[] idx = new int[c.tokens * k];
      float[] w = new float[c.tokens * k];
      byte[] rows = new byte[c.tokens];
      long nonfinite = forward(r, c, type, c.replayIdx, idx, w, rows);
      assertArrayEquals(c.replayIdx, idx, "replay keeps the given experts in order");
      assertNormClose("replay weights", w, c.replayWeights);
      assertRows("replay non-finite rows", c.replayNonfiniteRows, rows, nonfinite, c);
    }
  }

  /** Backward through the live and the replayed experts, each with the flags of its own forward. */
  @ParameterizedTest(name = "{0} on {1} ({2})")
  @MethodSource("routed")
  void backwardMatchesTheReference(GoldensV2.Case c, Backend backend, LogitsType type) {
    int k = c.config.topK(), e = c.config.experts();
    try (MoeRouter r = MoeRouter.create(c.config, backend)) {
      int[] idx = new int[c.tokens * k];
      float[] w = new float[c.tokens * k];
      byte[] rows = new byte[c.tokens];
      float[] grad = new float[c.tokens * e];
      forward(r, c, type, null, idx, w, rows);
      Arrays.fill(grad, Float.NaN);  // every element must be written
      backward(r, c, type, idx, rows, grad);
      assertNormClose("live grad logits", grad, c.liveGradLogits);
      forward(r, c, type, c.replayIdx, idx, w, rows);
      Arrays.fill(grad, Float.NaN);
      backward(r, c, type, c.replayIdx, rows, grad);
      assertNormClose("replay grad logits", grad, c.replayGradLogits);
    }
  }

  /** ERROR: live routing, replay and the replay backward fail naming the first row they read; nothing is written. */
  @ParameterizedTest(name = "{0} on {1}")
  @MethodSource("rejected")
  void nonFiniteErrorRejectsNamingTheFirstRowRead(GoldensV2.Case c, Backend backend, LogitsType type) {
    assertTrue(c.errorRowLive >= 0 && c.errorRowReplay >= 0, "case names the expected rows");
    int k = c.config.topK(), e = c.config.experts();
    try (MoeRouter r = MoeRouter.create(c.config, backend)) {
      int[] idx = new int[c.tokens * k];
      float[] w = new float[c.tokens * k];
      byte[] rows = new byte[c.tokens];
      Arrays.fill(idx, -7);
      Arrays.fill(w, -7f);
      Arrays.fill(rows, (byte) 7);
      expectRow(() -> forward(r, c, type, null, idx, w, rows), c.errorRowLive, "route");
      expectRow(() -> forward(r, c, type, c.replayIdx, idx, w, rows), c.errorRowReplay, "replay");
      for (int i = 0; i < idx.length; i++)
        if (idx[i] != -7 || w[i] != -7f) fail("a rejected call wrote output element " + i);
      for (int t = 0; t < c.tokens; t++) assertEquals(7, rows[t], "a rejected call wrote row flag " + t);
      float[] grad = new float[c.tokens * e];
      Arrays.fill(grad, -7f);
      expectRow(() -> backward(r, c, type, c.replayIdx, null, grad), c.errorRowReplay, "backward");
      for (int i = 0; i < grad.length; i++) if (grad[i] != -7f) fail("a rejected backward wrote gradient " + i);
    }
  }

  /** A file the format adds later must come with a check, not pass unnoticed. */
  @ParameterizedTest(name = "{0}")
  @MethodSource("all")
  void everyExpectedOutputIsChecked(GoldensV2.Case c) {
    assertEquals(List.of(), c.unchecked, c.name + ": expected outputs that no test compares");
  }

  static void expectRow(Runnable call, int row, String operation) {
    MoeRouterException ex = assertThrows(MoeRouterException.class, call::run, operation + " must be rejected");
    assertEquals(Status.NONFINITE, ex.status(), ex.getMessage());
    assertTrue(ex.getMessage().startsWith(operation + " failed: non-finite logits: row " + row + ": the logit of expert "),
        "'" + ex.getMessage() + "' does not name row " + row);
  }

  static void assertIndices(String what, int[] expected, int[] actual, int k) {
    assertNotNull(expected, what + ": the case has no expected indices");
    for (int i = 0; i < expected.length; i++)
      if (expected[i] != actual[i])
        fail(what + ": row " + i / k + " slot " + i % k + ": got " + actual[i] + ", expected " + expected[i]
            + " (row got " + Arrays.toString(Arrays.copyOfRange(actual, i / k * k, i / k * k + k)) + ", expected "
            + Arrays.toString(Arrays.copyOfRange(expected, i / k * k, i / k * k + k)) + ")");
  }

  /** Rows flagged non-finite: the expected flags when the case has them, else none (its logits are finite). */
  static void assertRows(String what, byte[] expected, byte[] actual, long count, GoldensV2.Case c) {
    byte[] want = expected != null ? expected : new byte[c.tokens];
    assertArrayEquals(want, actual, what);
    long n = 0;
    for (byte b : want) n += b;
    assertEquals(n, count, what + ": count");
  }

  /** ||actual - expected|| <= 1e-5 ||expected|| (2-norms over the whole array). */
  static void assertNormClose(String what, float[] actual, double[] expected) {
    assertNotNull(expected, what + ": the case has no expected values");
    assertEquals(expected.length, actual.length, what + ": length");
    double diff = 0, ref = 0;
    int worst = -1;
    double worstAbs = -1;
    for (int i = 0; i < expected.length; i++) {
      double d = actual[i] - expected[i];
      if (!(Math.abs(d) <= worstAbs)) {  // NaN is the worst
        worstAbs = Math.abs(d);
        worst = i;
      }
      diff += d * d;
      ref += expected[i] * expected[i];
    }
    double rel = Math.sqrt(diff) / Math.max(Math.sqrt(ref), 1e-30);
    if (!(rel <= NORM_REL))
      fail(what + ": norm-relative error " + rel + " > " + NORM_REL + "; worst element " + worst + ": got "
          + actual[worst] + ", expected " + expected[worst]);
  }
}
