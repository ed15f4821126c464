// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The v2 routing options (docs/semantics.md sections 1-5) on every host backend, rule by rule: the
 * ranking key (saturation ties decided by the logit), -1 replay rows under every policy on every replay
 * path, the non-finite policies ZERO and ERROR, the backward of the new scores against finite
 * differences, the deterministic sqrtsoftplus, and the CUDA backend's acceptance of every option.
 */
class RoutingOptionsTest {
  static List<Backend> backends() {
    return Backends.host();
  }

  static RouterConfig.Builder sigmoid(int e, int k) {
    return RouterConfig.builder(e, k).scoreFunction(ScoreFunction.SIGMOID);
  }

  // ------------------------------------------------------------------ ranking key

  /** Llama-4 style k = 1: sigmoid(17) == sigmoid(30) == 1.0f in float32; the larger logit wins, not the lower index. */
  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void saturatedSigmoidIsRankedByTheLogit(Backend backend) {
    assertEquals(JavaRouting.sigmoidDet(17f), JavaRouting.sigmoidDet(30f), "float32 saturates: the test needs the tie");
    float[] logits = {17f, 30f, -5f, 29f, /* row 2 */ -40f, -60f, -45f, -50f, /* row 3: equal logits */ 2f, 3f, 3f, 1f};
    try (MoeRouter r = MoeRouter.create(sigmoid(4, 1).build(), backend);
        MoeRouter two = MoeRouter.create(sigmoid(4, 2).build(), backend)) {
      RoutingResult res = r.route(logits, 3);
      assertArrayEquals(new int[] {1, 0, 1}, res.indices(), "by logit: 30 > 17; -40 > -45; equal logits: lower index");
      assertEquals(1f, res.weights()[0], "k = 1 is never normalised: w = S");
      assertArrayEquals(new int[] {1, 3, 0, 2, 1, 2}, two.route(logits, 3).indices(), "descending logit order");
    }
    // With a bias the key is R = S + b: the saturated tie is broken by the bias, as DeepSeek-V3 does.
    float[] bias = {0.5f, 0f, 0f, 0f};
    try (MoeRouter r = MoeRouter.create(sigmoid(4, 1).expertBias(bias).build(), backend)) {
      assertEquals(0, r.route(new float[] {17f, 30f, -5f, 29f}, 1).indices()[0]);
    }
    // Setting a bias later switches a router to R as well.
    try (MoeRouter r = MoeRouter.create(sigmoid(4, 1).build(), backend)) {
      assertEquals(1, r.route(new float[] {17f, 30f, -5f, 29f}, 1).indices()[0]);
      r.setExpertBias(new float[] {0f, 0f, 0f, 0f});
      assertEquals(0, r.route(new float[] {17f, 30f, -5f, 29f}, 1).indices()[0], "R ties: lower index");
    }
  }

  /** Softmax pre without bias ranks by the logit too; group scores still sum P. */
  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void softmaxPreRanksByTheLogitAndGroupsByTheProbabilities(Backend backend) {
    // exp(-200 - 0) underflows: P of experts 1 and 2 are both 0, their logits still order them.
    float[] logits = {0f, -200f, -150f, -300f};
    try (MoeRouter r = MoeRouter.create(RouterConfig.builder(4, 3).preSoftmax(true).build(), backend)) {
      assertArrayEquals(new int[] {0, 2, 1}, r.route(logits, 1).indices());
    }
  }

  // ------------------------------------------------------------------ -1 replay rows

  interface Replay {
    long run(MoeRouter r, float[] logits, int tokens, int[] replay, byte[] mask, int[] idx, float[] w, byte[] rows);
  }

  /** Every replay path: arrays (fp32 and bf16), direct buffers, raw addresses. */
  static final Replay[] PATHS = {
      (r, l, t, rep, m, idx, w, rows) -> r.replay(l, t, rep, m, idx, w, rows),
      (r, l, t, rep, m, idx, w, rows) -> r.replay(bf16(l), LogitsType.BF16, t, rep, m, idx, w, rows),
      (r, l, t, rep, m, idx, w, rows) -> {
        FloatBuffer lb = direct(l.length * 4).asFloatBuffer().put(l).flip();
        IntBuffer rb = direct(rep.length * 4).asIntBuffer().put(rep).flip();
        ByteBuffer mb = m == null ? null : direct(m.length).put(m).flip();
        IntBuffer ib = direct(idx.length * 4).asIntBuffer();
        FloatBuffer wb = direct(w.length * 4).asFloatBuffer();
        ByteBuffer fb = direct(rows.length);
        ib.put(idx).flip();
        wb.put(w).flip();
        fb.put(rows).flip();
        try {
          return r.route(lb, LogitsType.FP32, t, rb, mb, ib, wb, fb);
        } finally {
          ib.get(idx);
          wb.get(w);
          fb.get(rows);
        }
      },
      (r, l, t, rep, m, idx, w, rows) -> {
        try (FloatPointer pl = new FloatPointer(l); IntPointer pr = new IntPointer(rep);
            BytePointer pm = m == null ? null : new BytePointer(m); IntPointer pi = new IntPointer(idx);
            FloatPointer pw = new FloatPointer(w); BytePointer pf = new BytePointer(rows)) {
          try {
            return r.routeAddress(pl.address(), LogitsType.FP32, t, pr.address(), pm == null ? 0 : pm.address(),
                pi.address(), pw.address(), pf.address());
          } finally {
            pi.get(idx);
            pw.get(w);
            pf.get(rows);
          }
        }
      }};
  static final String[] PATH_NAMES = {"float[]", "short[] bf16", "direct buffers", "addresses"};

  static ByteBuffer direct(int bytes) {
    return ByteBuffer.allocateDirect(Math.max(bytes, 1)).order(ByteOrder.nativeOrder());
  }

  /** The values are bf16-exact in these tests (multiples of 1/8 below 32). */
  static short[] bf16(float[] l) {
    short[] h = new short[l.length];
    for (int i = 0; i < l.length; i++) h[i] = (short) (Float.floatToRawIntBits(l[i]) >>> 16);
    return h;
  }

  static float[] eighths(SplittableRandom rnd, int n) {
    float[] l = new float[n];
    for (int i = 0; i < n; i++) l[i] = (rnd.nextInt(256) - 128) / 8f;
    return l;
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void minusOneRowsFollowTheirPolicyOnEveryReplayPath(Backend backend) {
    final int e = 16, k = 3, t = 5;
    SplittableRandom rnd = new SplittableRandom(5);
    float[] logits = eighths(rnd, t * e);
    int[] replay = TestData.randomSelection(rnd, t, k, e);
    Arrays.fill(replay, 2 * k, 3 * k, -1);  // row 2: a padding row
    for (int p = 0; p < PATHS.length; p++) {
      final int path = p;
      String where = backend + ", " + PATH_NAMES[p];
      for (MinusOneRows policy : MinusOneRows.values()) {
        RouterConfig config = sigmoid(e, k).minusOneRows(policy).build();
        try (MoeRouter r = MoeRouter.create(config, backend)) {
          int[] idx = new int[t * k];
          float[] w = new float[t * k];
          byte[] rows = new byte[t];
          Arrays.fill(idx, -7);
          if (policy == MinusOneRows.REJECT) {
            MoeRouterException ex = assertThrows(MoeRouterException.class,
                () -> PATHS[path].run(r, logits, t, replay, null, idx, w, rows), where);
            assertEquals(Status.INVALID_REPLAY, ex.status());
            assertEquals("replay failed: invalid replay indices: row 2: expert -1 at position 0 is out of range [0, 16) "
                + "(a padding row of -1: rejected by minus-one rows REJECT; LIVE or ARANGE accept it)", ex.getMessage(), where);
            for (int v : idx) assertEquals(-7, v, where + ": a rejected call wrote an index");
            // A masked-out row is routed live and never checked.
            byte[] mask = {1, 1, 0, 1, 1};
            PATHS[path].run(r, logits, t, replay, mask, idx, w, rows);
            assertArrayEquals(live(r, logits, t, 2), Arrays.copyOfRange(idx, 2 * k, 3 * k), where + ": masked row");
            continue;
          }
          PATHS[path].run(r, logits, t, replay, null, idx, w, rows);
          int[] expected = policy == MinusOneRows.ARANGE ? new int[] {0, 1, 2} : live(r, logits, t, 2);
          assertArrayEquals(expected, Arrays.copyOfRange(idx, 2 * k, 3 * k), where + ", " + policy);
          for (int row : new int[] {0, 1, 3, 4})
            assertArrayEquals(Arrays.copyOfRange(replay, row * k, row * k + k), Arrays.copyOfRange(idx, row * k, row * k + k));
          // The weights of the padding row are those of its experts, replayed.
          int[] forced = replay.clone();
          System.arraycopy(expected, 0, forced, 2 * k, k);
          float[] w2 = r.replay(logits, t, forced, null).weights();
          assertArrayEquals(w2, w, 0f, where + ", " + policy + ": weights");
        }
      }
      // A row mixing -1 and experts is rejected under every policy.
      for (MinusOneRows policy : MinusOneRows.values()) {
        try (MoeRouter r = MoeRouter.create(sigmoid(e, k).minusOneRows(policy).build(), backend)) {
          int[] mixed = replay.clone();
          System.arraycopy(new int[] {4, 5, 6}, 0, mixed, 2 * k, k);
          mixed[3 * k + 1] = -1;
          MoeRouterException ex = assertThrows(MoeRouterException.class,
              () -> PATHS[path].run(r, logits, t, mixed, null, new int[t * k], new float[t * k], new byte[t]));
          assertTrue(ex.getMessage().endsWith("row 3: expert -1 at position 1 is out of range [0, 16) (a row mixing -1 "
              + "and experts is always rejected)"), policy + ": " + ex.getMessage());
        }
      }
    }
  }

  static int[] live(MoeRouter r, float[] logits, int tokens, int row) {
    int k = r.config().topK();
    return Arrays.copyOfRange(r.route(logits, tokens).indices(), row * k, row * k + k);
  }

  // ------------------------------------------------------------------ non-finite policies

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void zeroPolicyZeroesWeightsAndGradientsOfRowsThatReadANonFiniteLogit(Backend backend) {
    final int e = 8, k = 2, t = 4;
    float[] l = new float[t * e];
    for (int i = 0; i < l.length; i++) l[i] = (i % 7) * 0.25f - 0.5f;
    l[1 * e + 6] = Float.NaN;  // row 1: NaN outside what replay reads
    l[2 * e + 0] = Float.POSITIVE_INFINITY;  // row 2: +inf that replay reads
    int[] replay = {0, 1, 2, 3, 0, 1, 4, 5};
    try (MoeRouter r = MoeRouter.create(RouterConfig.builder(e, k).nonFinite(NonFinitePolicy.ZERO).build(), backend);
        MoeRouter plain = MoeRouter.create(RouterConfig.builder(e, k).build(), backend)) {
      RoutingResult live = r.route(l, t);
      assertArrayEquals(new byte[] {0, 1, 1, 0}, live.nonfiniteRowFlags(), "live rows read their whole row");
      assertEquals(2, live.nonfiniteRows());
      RoutingResult ref = plain.route(l, t);
      assertArrayEquals(ref.indices(), live.indices(), "ZERO selects as PROPAGATE");
      for (int row = 0; row < t; row++)
        for (int j = 0; j < k; j++)
          assertEquals(row == 1 || row == 2 ? 0f : ref.weights()[row * k + j], live.weights()[row * k + j]);
      RoutingResult rep = r.replay(l, t, replay, null);
      assertArrayEquals(new byte[] {0, 0, 1, 0}, rep.nonfiniteRowFlags(), "replay reads the k replayed logits");

      float[] dw = {1f, -2f, 0.5f, 3f, -1f, 2f, 0.25f, 1f};
      float[] grad = new float[t * e];
      MoeRouterException ex = assertThrows(MoeRouterException.class, () -> r.backward(l, t, live.indices(), dw, grad));
      assertEquals("non-finite policy ZERO: backward needs the forward's non-finite row flags (a live row read its "
          + "whole row, which the indices alone do not tell)", ex.getMessage());
      r.backward(l, t, live.indices(), dw, live.nonfiniteRowFlags(), grad);
      float[] refGrad = new float[t * e];
      plain.backward(l, t, live.indices(), dw, refGrad);
      for (int row = 0; row < t; row++)
        for (int i = 0; i < e; i++)
          assertEquals(row == 1 || row == 2 ? 0f : refGrad[row * e + i], grad[row * e + i], "row " + row + " col " + i);
      r.backward(l, t, replay, dw, rep.nonfiniteRowFlags(), grad);
      assertTrue(grad[1 * e + 2] != 0f, "row 1 replayed finite logits: it keeps its gradient");
      for (int i = 0; i < e; i++) assertEquals(0f, grad[2 * e + i]);
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void errorPolicyRejectsTheFirstRowItReadsAndWritesNothing(Backend backend) {
    final int e = 8, k = 2, t = 4;
    float[] l = new float[t * e];
    l[1 * e + 6] = Float.NEGATIVE_INFINITY;  // read by live routing only
    l[3 * e + 5] = Float.NaN;  // read by replay too
    int[] replay = {0, 1, 2, 3, 0, 1, 4, 5};
    RouterConfig config = sigmoid(e, k).nonFinite(NonFinitePolicy.ERROR).build();
    try (MoeRouter r = MoeRouter.create(config, backend)) {
      for (int p = 0; p < PATHS.length; p++) {
        int[] idx = new int[t * k];
        float[] w = new float[t * k];
        byte[] rows = new byte[t];
        Arrays.fill(idx, -7);
        Arrays.fill(w, -7f);
        Arrays.fill(rows, (byte) 7);
        final int path = p;
        MoeRouterException ex = assertThrows(MoeRouterException.class,
            () -> PATHS[path].run(r, l, t, replay, null, idx, w, rows));
        assertEquals(Status.NONFINITE, ex.status());
        assertEquals("replay failed: non-finite logits: row 3: the logit of expert 5 is NaN (non-finite policy ERROR)",
            ex.getMessage(), PATH_NAMES[p]);
        for (int i = 0; i < idx.length; i++) assertTrue(idx[i] == -7 && w[i] == -7f, PATH_NAMES[p] + ": wrote " + i);
        for (byte b : rows) assertEquals(7, b);
      }
      MoeRouterException ex = assertThrows(MoeRouterException.class, () -> r.route(l, t));
      assertEquals("route failed: non-finite logits: row 1: the logit of expert 6 is -inf (non-finite policy ERROR)",
          ex.getMessage());
      // A masked-out (live) row reads its whole row.
      ex = assertThrows(MoeRouterException.class, () -> r.replay(l, t, replay, new byte[] {1, 0, 1, 1}));
      assertTrue(ex.getMessage().contains("row 1: the logit of expert 6 is -inf"), ex.getMessage());
      float[] clean = l.clone();
      clean[3 * e + 5] = 1f;
      assertEquals(0, r.replay(clean, t, replay, null).nonfiniteRows(), "replay of finite logits passes");
      ex = assertThrows(MoeRouterException.class, () -> r.backward(l, t, replay, new float[t * k], new float[t * e]));
      assertTrue(ex.getMessage().startsWith("backward failed: non-finite logits: row 3:"), ex.getMessage());
    }
  }

  // ------------------------------------------------------------------ backward vs finite differences

  static List<RouterConfig> newScoreConfigs() {
    float[] bias = {0.1f, -0.2f, 0.05f, 0f, 0.3f, -0.1f, 0.2f, 0f, -0.3f, 0.15f};
    return List.of(
        RouterConfig.builder(10, 4).scoreFunction(ScoreFunction.SQRTSOFTPLUS).build(),
        RouterConfig.builder(10, 4).scoreFunction(ScoreFunction.SQRTSOFTPLUS).normalize(false).scale(2f).build(),
        RouterConfig.builder(10, 1).scoreFunction(ScoreFunction.SQRTSOFTPLUS).expertBias(bias).build(),
        sigmoid(10, 4).normalize(false).build(),
        RouterConfig.builder(10, 4).preSoftmax(true).expertBias(bias).normalize(true).build(),
        RouterConfig.builder(10, 3).preSoftmax(true).normalize(true).scale(1.5f).build(),
        RouterConfig.builder(10, 3).preSoftmax(true).expertBias(bias).build());
  }

  /**
   * The logit gradient of sum(dw * w) through replayed experts against central differences of the
   * forward in float32 (h = 1/128, so every perturbed logit is exact): within 2e-3 of the row's largest
   * gradient. Logits include values above 20 (sqrtsoftplus's linear branch).
   */
  @Test
  void backwardOfTheNewScoresMatchesFiniteDifferences() {
    SplittableRandom rnd = new SplittableRandom(11);
    final int t = 3, e = 10;
    final float h = 1f / 128;
    for (RouterConfig c : newScoreConfigs())
      for (Backend backend : Backends.host()) {
        int k = c.topK();
        float[] l = new float[t * e];
        for (int i = 0; i < l.length; i++) l[i] = Math.round(rnd.nextGaussian() * 3 * 64) / 64f;
        l[4] = 22.5f;
        l[e + 7] = 24f;
        int[] replay = TestData.randomSelection(rnd, t, k, e);
        for (int j = 1; j < k; j++) if (replay[j] == 4) replay[j] = replay[0];
        replay[0] = 4;  // the > 20 logit is selected
        float[] dw = new float[t * k];
        for (int i = 0; i < dw.length; i++) dw[i] = (float) rnd.nextGaussian();
        try (MoeRouter r = MoeRouter.create(c, backend)) {
          float[] grad = new float[t * e];
          r.backward(l, t, replay, dw, grad);
          for (int row = 0; row < t; row++) {
            double max = 0;
            for (int i = 0; i < e; i++) max = Math.max(max, Math.abs(grad[row * e + i]));
            for (int i = 0; i < e; i++) {
              float[] lp = l.clone(), lm = l.clone();
              lp[row * e + i] += h;
              lm[row * e + i] -= h;
              double fd = (loss(r, lp, t, replay, dw) - loss(r, lm, t, replay, dw)) / (2 * h);
              if (Math.abs(fd - grad[row * e + i]) > 2e-3 * Math.max(max, 1e-3))
                fail(c + " on " + backend + ": row " + row + " col " + i + ": backward " + grad[row * e + i]
                    + ", finite difference " + fd);
            }
          }
        }
      }
  }

  static double loss(MoeRouter r, float[] l, int t, int[] replay, float[] dw) {
    float[] w = r.replay(l, t, replay, null).weights();
    double s = 0;
    for (int i = 0; i < w.length; i++) s += (double) dw[i] * w[i];
    return s;
  }

  // ------------------------------------------------------------------ the deterministic sqrtsoftplus

  /** log1p_det and sqrtsoftplus_det within 2 ulp of the double-precision functions (normal range). */
  @Test
  void sqrtsoftplusIsAccurateAndSpecialValuesAreExact() {
    SplittableRandom rnd = new SplittableRandom(3);
    for (int i = 0; i < 200_000; i++) {
      float x = (float) (rnd.nextDouble() * 112 - 87);  // exp(x) stays normal
      double sp = x > 20 ? x : Math.log1p(Math.exp(x));
      float want = (float) Math.sqrt(sp);
      float got = JavaRouting.sqrtsoftplusDet(x);
      if (Math.abs(got - Math.sqrt(sp)) > 2 * Math.ulp(want)) fail("sqrtsoftplus(" + x + ") = " + got + ", expected " + want);
      float y = (float) Math.exp(rnd.nextDouble() * 40 - 30);
      float l1p = JavaRouting.log1pDet(y);
      if (Math.abs(l1p - Math.log1p(y)) > 2 * Math.ulp((float) Math.log1p(y))) fail("log1p(" + y + ") = " + l1p);
    }
    assertEquals(0f, JavaRouting.sqrtsoftplusDet(Float.NEGATIVE_INFINITY));
    assertEquals(Float.POSITIVE_INFINITY, JavaRouting.sqrtsoftplusDet(Float.POSITIVE_INFINITY));
    assertTrue(Float.isNaN(JavaRouting.sqrtsoftplusDet(Float.NaN)));
    assertEquals((float) Math.sqrt(25.0), JavaRouting.sqrtsoftplusDet(25f), "x > 20: sqrt(x)");
    assertEquals(0f, JavaRouting.log1pDet(0f));
    assertEquals(1e-30f, JavaRouting.log1pDet(1e-30f), "tiny y: log1p(y) == y");
    assertEquals(Float.POSITIVE_INFINITY, JavaRouting.log1pDet(Float.POSITIVE_INFINITY));
  }

  /**
   * The aux-loss scores of a sqrtsoftplus router are its own scores normalised per row, S / (sum S + 1e-20)
   * (not sigmoid's), on both backends, and the backends agree on the loss and its gradient.
   */
  @Test
  void auxLossOfASqrtsoftplusRouterUsesItsScores() {
    SplittableRandom rnd = new SplittableRandom(17);
    final int t = 50, e = 24, k = 3;
    float[] l = new float[t * e];
    for (int i = 0; i < l.length; i++) l[i] = (float) (rnd.nextGaussian() * 4);
    l[7] = 26f;
    RouterConfig c = RouterConfig.builder(e, k).scoreFunction(ScoreFunction.SQRTSOFTPLUS).build();
    float[][] scores = new float[2][t * e], grads = new float[2][t * e];
    float[] loss = new float[2];
    for (int b = 0; b < 2; b++)
      try (MoeRouter r = MoeRouter.create(c, Backends.host().get(b))) {
        loss[b] = r.auxLoss(l, t, 0.01f, scores[b], null, null, grads[b]);
      }
    for (int row = 0; row < t; row++) {
      double sum = 0;
      for (int i = 0; i < e; i++) sum += sqrtsoftplus(l[row * e + i]);
      for (int i = 0; i < e; i++)
        assertEquals(sqrtsoftplus(l[row * e + i]) / sum, scores[1][row * e + i], 1e-6, "row " + row + " expert " + i);
    }
    BackendEquivalenceTest.assertWeights("aux scores", scores[0], scores[1]);
    BackendEquivalenceTest.assertWeights("aux loss", new float[] {loss[0]}, new float[] {loss[1]});
    BackendEquivalenceTest.assertWeights("aux gradient", grads[0], grads[1]);
  }

  static double sqrtsoftplus(float x) {
    return Math.sqrt(x > 20 ? x : Math.log1p(Math.exp(x)));
  }

  // ------------------------------------------------------------------ statuses and the CUDA backend

  @Test
  void statusTextsMatchTheNativeOnes() {
    for (Status s : Status.values()) {
      if (s == Status.UNKNOWN) continue;
      assertEquals(s.description(), RouterNative.moe_status_string(s.code()).getString(), s.name());
    }
    assertEquals(Status.UNKNOWN.description(), RouterNative.moe_status_string(99).getString());
  }

  /**
   * The CUDA kernels implement every option of spec sections 1-5 (checked bit for bit against the CPU
   * backend by the SIMT harness): creating a CUDA router with any of them gets as far as looking for a
   * device, never an "unsupported option" refusal.
   */
  @Test
  void cudaRouterAcceptsEveryOption() {
    Assumptions.assumeTrue(RouterNative.moe_cuda_compiled() == 1, "the native library was built without CUDA");
    float[] b64 = new float[64];
    RouterConfig[] configs = {
        RouterConfig.builder(64, 6).scoreFunction(ScoreFunction.SQRTSOFTPLUS).build(),
        RouterConfig.builder(64, 6).preSoftmax(true).expertBias(b64).build(),
        sigmoid(64, 6).normalize(false).build(),
        RouterConfig.builder(64, 6).preSoftmax(true).normalize(true).build(),
        sigmoid(64, 8).groups(8, 4).groupScore(GroupScore.TOP2_SUM).build(),
        sigmoid(64, 8).groups(8, 4).groupScore(GroupScore.MAX).build(),
        RouterConfig.builder(64, 7).groups(8, 2).build(),
        sigmoid(64, 6).nonFinite(NonFinitePolicy.ZERO).build(),
        sigmoid(64, 6).nonFinite(NonFinitePolicy.ERROR).build(),
        sigmoid(64, 6).minusOneRows(MinusOneRows.LIVE).build(),
        sigmoid(64, 6).minusOneRows(MinusOneRows.ARANGE).build()};
    for (RouterConfig config : configs) {
      long h = RouterNative.moe_jni_router_create(2, 0, config.experts(), config.topK(), config.scoreFunction().code,
          config.preSoftmax() ? 1 : 0, config.groups(), config.groupTopK(), config.scale(), config.expertBiasUnsafe(),
          config.normalizeCode(), config.groupScore().code, config.nonFinite().code, config.minusOneRows().code);
      if (h > 0) {
        RouterNative.moe_jni_router_destroy(h);
        continue;
      }
      assertEquals(Status.NO_DEVICE.code(), (int) -h, config + ": " + RouterNative.moe_last_error_message().getString());
    }
  }
}
