// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every goldens_v2 case on every host backend for what docs/semantics.md section 6 defines: tokens per expert
 * (after dropping), valid tokens per expert, the updated expert bias, the aux-map counts, the aux, sequence
 * aux, global aux and z losses with their gradients (one loss at a time, as the format stores them, and all
 * at once), the global tracker's running average, and token dropping of the live and the replayed experts
 * (final map, probs, kept entries, kept counts, the backward through kept entries). Indices, maps and counts
 * exact; floats within 1e-5 norm-relative (the README's rule), scalars within 1e-5 relative. bf16 cases also
 * run through the bf16 input path.
 */
class GoldenV2TrainingTest {
  static final double REL = 1e-5;

  static List<Arguments> cases(java.util.function.Predicate<GoldensV2.Case> which) {
    List<Arguments> out = new ArrayList<>();
    for (GoldensV2.Case c : GoldensV2.all())
      if (!c.error() && which.test(c))
        for (Backend b : Backends.host()) {
          out.add(Arguments.of(c, b, LogitsType.FP32));
          if (c.bf16) out.add(Arguments.of(c, b, LogitsType.BF16));
        }
    return out;
  }

  static List<Arguments> routed() {
    return cases(c -> true);
  }

  static List<Arguments> withLosses() {
    return cases(c -> c.auxTokensPerExpert != null);
  }

  static List<Arguments> withDropping() {
    return cases(c -> c.dropping != null);
  }

  static List<Arguments> withGlobalHistory() {
    List<Arguments> out = new ArrayList<>();
    for (GoldensV2.Case c : GoldensV2.all()) if (c.globalHistory != null) out.add(Arguments.of(c));
    return out;
  }

  static long valid(MoeRouter r, GoldensV2.Case c, LogitsType type, byte[] out) {
    return type == LogitsType.BF16 ? r.validTokens(c.logitsBf16(), type, c.tokens, c.paddingMask, out)
        : r.validTokens(c.logits, c.tokens, c.paddingMask, out);
  }

  static LossValues losses(MoeRouter r, GoldensV2.Case c, LogitsType type, byte[] valid, LossConfig lc, float[] grad,
      LossValues out) {
    double ng = Double.isNaN(c.globalNumTokens) ? 0 : c.globalNumTokens;
    return type == LogitsType.BF16
        ? r.losses(c.logitsBf16(), type, c.tokens, valid, lc, c.globalTokens, ng, grad, out)
        : r.losses(c.logits, c.tokens, valid, lc, c.globalTokens, ng, grad, out);
  }

  /** tokens_per_expert (column sums of the final live map, after dropping), valid_tokens_per_expert, updated_bias. */
  @ParameterizedTest(name = "{0} on {1} ({2})")
  @MethodSource("routed")
  void countsAndTheBiasUpdateMatchTheReference(GoldensV2.Case c, Backend backend, LogitsType type) {
    int k = c.config.topK(), e = c.config.experts(), t = c.tokens;
    try (MoeRouter r = MoeRouter.create(c.config, backend)) {
      int[] idx = new int[t * k];
      float[] w = new float[t * k];
      byte[] rows = new byte[t];
      GoldenV2Test.forward(r, c, type, null, idx, w, rows);
      byte[] valid = new byte[t];
      long n = valid(r, c, type, valid);
      assertEquals(expectedValid(c), n, "valid tokens N");
      int[] all = new int[e], counted = new int[e];
      if (c.dropping != null) {
        byte[] map = new byte[t * e];
        r.dropTokens(c.dropping, idx, w, t, map, null, null, null);
        r.tokensPerExpert(map, t, null, all);
        r.tokensPerExpert(map, t, valid, counted);
      } else {
        r.tokensPerExpert(idx, t, null, all);
        r.tokensPerExpert(idx, t, valid, counted);
      }
      assertNotNull(c.tokensPerExpert, "every routed case has tokens_per_expert");
      assertArrayEquals(c.tokensPerExpert, all, "tokens per expert (final map)");
      if (c.validTokensPerExpert != null) assertArrayEquals(c.validTokensPerExpert, counted, "valid tokens per expert");
      else assertArrayEquals(all, counted, "without padding or ZERO every row is valid");
      if (c.updatedBias != null) {
        float[] next = r.updateExpertBias(counted, c.biasUpdateRate);
        GoldenV2Test.assertNormClose("updated bias", next, c.updatedBias);
        assertArrayEquals(next, r.expertBias(), "the router uses the updated bias");
      }
    }
  }

  /** Each loss alone (the format's files), then all of them in one call: values, c, gradients. */
  @ParameterizedTest(name = "{0} on {1} ({2})")
  @MethodSource("withLosses")
  void lossesAndTheirGradientsMatchTheReference(GoldensV2.Case c, Backend backend, LogitsType type) throws IOException {
    int e = c.config.experts(), t = c.tokens;
    try (MoeRouter r = MoeRouter.create(c.config, backend)) {
      byte[] valid = new byte[t];
      valid(r, c, type, valid);
      LossValues v = new LossValues(e);
      LossConfig.Builder all = LossConfig.builder();
      double total = 0;
      double[] totalGrad = new double[t * e];
      int checked = 0;
      for (GoldensV2.Loss loss : GoldensV2.Loss.values()) {
        if (c.coeff(loss) == 0f) {
          assertTrue(!c.has(loss.lossFile) && !c.has(loss.gradFile), loss + ": files without a coefficient");
          continue;
        }
        float[] grad = new float[t * e];
        losses(r, c, type, valid, c.lossConfig(loss), grad, v);
        assertClose(loss + " loss", value(v, loss), c.expectedLoss(loss));
        GoldenV2Test.assertNormClose(loss + " grad logits", grad, c.expectedGrad(loss));
        assertArrayEquals(c.auxTokensPerExpert, v.auxTokensPerExpert(), loss + ": aux tokens per expert");
        assertEquals(expectedValid(c), v.validTokens(), "N");
        total += c.expectedLoss(loss);
        double[] g = c.expectedGrad(loss);
        for (int i = 0; i < g.length; i++) totalGrad[i] += g[i];
        addTo(all, loss, c);
        checked++;
      }
      assertTrue(checked > 0, "a loss case with no loss");
      float[] grad = new float[t * e];
      losses(r, c, type, valid, all.build(), grad, v);
      assertClose("all losses at once", v.total(), total);
      GoldenV2Test.assertNormClose("all loss gradients at once", grad, totalGrad);
    }
  }

  /** The history rows through the tracker give the case's G (their mean) and Ng (the last row / k). */
  @ParameterizedTest(name = "{0}")
  @MethodSource("withGlobalHistory")
  void theGlobalTrackerAveragesTheHistoryAsTheReference(GoldensV2.Case c) {
    int e = c.config.experts();
    GlobalAuxTracker tracker = new GlobalAuxTracker(e, c.config.topK());
    for (double[] row : c.globalHistory) tracker.add(row);
    assertEquals(c.globalHistory.length, tracker.steps());
    GoldenV2Test.assertNormClose("G", toFloat(tracker.tokensPerExpert(new double[e])), c.globalTokens);
    assertClose("Ng", tracker.numTokens(), c.globalNumTokens);
    GlobalAuxTracker ints = new GlobalAuxTracker(e, c.config.topK());
    for (double[] row : c.globalHistory) {
      int[] counts = new int[e];
      for (int i = 0; i < e; i++) counts[i] = (int) row[i];
      ints.add(counts);
    }
    assertArrayEquals(tracker.tokensPerExpert(new double[e]), ints.tokensPerExpert(new double[e]), "int and double counts");
  }

  /** Dropping after live routing and after replay: final map, probs, kept entries and counts, backward through kept. */
  @ParameterizedTest(name = "{0} on {1} ({2})")
  @MethodSource("withDropping")
  void droppingMatchesTheReferenceForLiveAndReplayedExperts(GoldensV2.Case c, Backend backend, LogitsType type) {
    int k = c.config.topK(), e = c.config.experts(), t = c.tokens;
    try (MoeRouter r = MoeRouter.create(c.config, backend)) {
      for (boolean replay : new boolean[] {false, true}) {
        GoldensV2.Drop want = replay ? c.replayDrop : c.liveDrop;
        String what = replay ? "replay drop " : "live drop ";
        assertNotNull(want, what + "expected outputs");
        int[] idx = new int[t * k];
        float[] w = new float[t * k];
        byte[] rows = new byte[t];
        GoldenV2Test.forward(r, c, type, replay ? c.replayIdx : null, idx, w, rows);
        byte[] map = new byte[t * e], kept = new byte[t * k];
        float[] probs = new float[t * e];
        int[] keptCounts = new int[e];
        Arrays.fill(map, (byte) 7);
        Arrays.fill(probs, 7f);
        Arrays.fill(kept, (byte) 7);
        long dropped = r.dropTokens(c.dropping, idx, w, t, map, probs, kept, keptCounts);
        assertMask(what + "routing map", want.map, map, e);
        GoldenV2Test.assertNormClose(what + "routing probs", probs, want.probs);
        assertMask(what + "kept", want.kept, kept, k);
        assertArrayEquals(want.keptCounts, keptCounts, what + "kept counts");
        long keptTotal = 0;
        for (int x : keptCounts) keptTotal += x;
        assertEquals((long) t * k - keptTotal, dropped, what + "dropped entries");
        float[] dw = new float[t * k];
        TokenDropping.maskDropped(t, k, c.gradWeights, kept, dw);
        float[] grad = new float[t * e];
        GoldenV2Test.backward(r, c, type, idx, rows, dw, grad);
        GoldenV2Test.assertNormClose(what + "grad logits", grad, want.gradLogits);
      }
    }
  }

  static long expectedValid(GoldensV2.Case c) {
    long n = 0;
    for (int t = 0; t < c.tokens; t++) {
      boolean pad = c.paddingMask != null && c.paddingMask[t] != 0;
      boolean finite = true;
      if (c.config.nonFinite() == NonFinitePolicy.ZERO)
        for (int i = 0; i < c.config.experts(); i++) finite &= Float.isFinite(c.logits[t * c.config.experts() + i]);
      if (!pad && finite) n++;
    }
    return n;
  }

  static double value(LossValues v, GoldensV2.Loss loss) {
    switch (loss) {
      case AUX: return v.auxLoss();
      case SEQ_AUX: return v.seqAuxLoss();
      case GLOBAL_AUX: return v.globalAuxLoss();
      default: return v.zLoss();
    }
  }

  static void addTo(LossConfig.Builder b, GoldensV2.Loss loss, GoldensV2.Case c) {
    LossConfig one = c.lossConfig(loss);
    switch (loss) {
      case AUX: b.auxLoss(one.auxCoeff()); break;
      case SEQ_AUX: b.seqAuxLoss(one.seqAuxCoeff(), one.seqLength(), one.seqLayout()); break;
      case GLOBAL_AUX: b.globalAuxLoss(one.globalAuxCoeff()); break;
      default: b.zLoss(one.zCoeff());
    }
  }

  static void assertClose(String what, double actual, double expected) {
    if (!(Math.abs(actual - expected) <= REL * Math.abs(expected)))
      fail(what + ": got " + actual + ", expected " + expected + " (relative error "
          + Math.abs(actual - expected) / Math.abs(expected) + " > " + REL + ")");
  }

  /** 0/1 masks element for element, naming the first difference by row and column. */
  static void assertMask(String what, byte[] expected, byte[] actual, int cols) {
    assertNotNull(expected, what + ": the case has no expected values");
    for (int i = 0; i < expected.length; i++)
      if (expected[i] != actual[i])
        fail(what + ": row " + i / cols + " column " + i % cols + ": got " + actual[i] + ", expected " + expected[i]);
  }

  static float[] toFloat(double[] a) {
    float[] f = new float[a.length];
    for (int i = 0; i < a.length; i++) f[i] = (float) a[i];
    return f;
  }
}
