// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.github.tjake.jlama.model.MoEBlock;
import com.github.tjake.jlama.safetensors.DType;
import com.github.tjake.jlama.tensor.AbstractTensor;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Optional;
import java.util.SplittableRandom;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.moerouter.Backend;

/** One routed MoE layer against a float64 Mixtral reference, against jlama's MoEBlock, and its routing against jlama's top-k. */
class MoeRouterFeedForwardTest {
  /**
   * Differences left by jlama's JIT-dependent reductions: a few float ulps through two matmuls in fp32; on
   * the bf16 path such an ulp can flip the bf16 rounding of an activation between the matmuls (2^-8 of it).
   * A wrong expert, weight or combine is off by O(1).
   */
  private static float lastBits(RoutedMixtralModel m) {
    return m.matmulInputType() == DType.F32 ? 1e-6f : 1e-3f;
  }
  private static RoutedMixtralModel fp32;
  private static RoutedMixtralModel checkpoint;
  private static MixtralRouting routing;

  @BeforeAll
  static void load() throws IOException {
    fp32 = RoutedMixtralModel.load(TinyModels.small(), RoutedMixtralModel.Precision.FP32);
    checkpoint = RoutedMixtralModel.load(TinyModels.small(), RoutedMixtralModel.Precision.CHECKPOINT);
    routing = new MixtralRouting(fp32.experts(), fp32.topK(), fp32.layers(), Backend.AUTO);
    fp32.setRouter(routing);
    checkpoint.setRouter(routing);
  }

  @AfterAll
  static void close() {
    routing.close();
  }

  private static RoutedMixtralModel model(RoutedMixtralModel.Precision p) {
    return p == RoutedMixtralModel.Precision.FP32 ? fp32 : checkpoint;
  }

  @ParameterizedTest(name = "T={0}")
  @ValueSource(ints = {1, 7, 40})
  void mixtralCombineMatchesAFloat64ReferenceLayer(int tokens) {
    fp32.setCombine(MoeRouterFeedForward.Combine.MIXTRAL);
    int layer = 1, d = fp32.getConfig().embeddingLength;
    Reference ref = new Reference(fp32, layer);
    AbstractTensor x = TinyModels.input(tokens, d, 100 + tokens, DType.F32);
    try (AbstractTensor y = fp32.moeLayer(layer).forward(x, Optional.empty())) {
      for (int t = 0; t < tokens; t++) {
        double[] want = ref.forward(TinyModels.row(x, t));
        float[] got = TinyModels.row(y, t);
        for (int i = 0; i < d; i++) {
          // float32 sums of D = 128 and F = 256 products of O(1) terms
          assertTrue(Math.abs(got[i] - want[i]) <= 1e-5 + 1e-4 * Math.abs(want[i]),
              "T=" + tokens + " token " + t + " [" + i + "]: " + got[i] + " vs float64 " + want[i]);
        }
      }
    }
  }

  /**
   * Same kernels, same order of the two expert outputs: equal up to the last bits, which jlama's Vector API
   * reductions change while the JIT warms up (the same call, same input, moves by an ulp: see
   * MoeRouterFeedForward), so not bit for bit across two calls; see {@link #lastBits}.
   */
  @ParameterizedTest(name = "{0}")
  @EnumSource(value = RoutedMixtralModel.Precision.class, names = {"CHECKPOINT", "FP32"})
  void unweightedCombineEqualsJlamasMoEBlockOneTokenAtATime(RoutedMixtralModel.Precision precision) {
    RoutedMixtralModel m = model(precision);
    m.setCombine(MoeRouterFeedForward.Combine.UNWEIGHTED);
    try {
      int d = m.getConfig().embeddingLength;
      MoEBlock jlama = m.moeLayer(0).jlamaMoEBlock();
      for (int t = 0; t < 16; t++) {
        AbstractTensor x = TinyModels.input(1, d, 500 + t, m.matmulInputType());
        try (AbstractTensor ours = m.moeLayer(0).forward(x, Optional.empty());
            AbstractTensor theirs = jlama.forward(x, Optional.empty())) {
          for (int i = 0; i < d; i++)
            assertEquals(theirs.get(0, i), ours.get(0, i), lastBits(m) * Math.max(1, Math.abs(theirs.get(0, i))),
                precision + " token " + t + " [" + i + "]");
        }
      }
    } finally {
      m.setCombine(MoeRouterFeedForward.Combine.MIXTRAL);
    }
  }

  @Test
  void jlamasMoEBlockMixesTheRowsOfABatchSoParityRunsOneTokenPerForward() {
    // jlama 0.8.4 copies every token's first expert into row 0 (copyFrom at offset 0); the parity tests
    // and Generation.Prefill.STEPWISE exist because of it. If this starts failing, jlama fixed it.
    RoutedMixtralModel m = fp32;
    int d = m.getConfig().embeddingLength;
    MoEBlock jlama = m.moeLayer(0).jlamaMoEBlock();
    AbstractTensor x = TinyModels.input(3, d, 77, DType.F32);
    boolean rowsDiffer = false;
    try (AbstractTensor batch = jlama.forward(x, Optional.empty())) {
      for (int t = 0; t < 3; t++) {
        try (AbstractTensor one = jlama.forward(x.slice(true, t), Optional.empty())) {
          rowsDiffer |= !Arrays.equals(TinyModels.row(batch, t), TinyModels.row(one, 0));
        }
      }
    }
    assertTrue(rowsDiffer, "MoEBlock gave the same rows batched and one by one: jlama fixed its batch path");
  }

  @Test
  void batchedRowsEqualTheSameTokensRoutedAlone() {
    assertBatchInvariance(fp32);
    assertBatchInvariance(checkpoint);
  }

  private static void assertBatchInvariance(RoutedMixtralModel m) {
    int d = m.getConfig().embeddingLength, tokens = 23;
    AbstractTensor x = TinyModels.input(tokens, d, 901, m.matmulInputType());
    try (AbstractTensor batch = m.moeLayer(1).forward(x, Optional.empty())) {
      for (int t = 0; t < tokens; t++) {
        try (AbstractTensor one = m.moeLayer(1).forward(x.slice(true, t), Optional.empty())) {
          float[] a = TinyModels.row(one, 0), b = TinyModels.row(batch, t);
          for (int i = 0; i < d; i++)
            assertEquals(a[i], b[i], lastBits(m) * Math.max(1, Math.abs(a[i])), m.matmulInputType() + " token " + t + " of " + tokens + " [" + i + "]");
        }
      }
    }
  }

  @ParameterizedTest(name = "E={0}")
  @ValueSource(ints = {8, 64})
  void moeRouterPicksJlamasExpertsWithItsRenormalisedProbabilities(int experts) {
    int k = experts == 8 ? 2 : 8, tokens = 4000;
    SplittableRandom r = new SplittableRandom(experts);
    float[] logits = new float[tokens * experts];
    for (int i = 0; i < logits.length; i++) logits[i] = (float) (2 * TinyModels.gaussian(r));
    int[] idx = new int[tokens * k], jidx = new int[tokens * k];
    float[] w = new float[tokens * k], jw = new float[tokens * k];
    try (MixtralRouting mr = new MixtralRouting(experts, k, 1, Backend.AUTO)) {
      mr.route(0, logits, tokens, idx, w);
    }
    new JlamaTopK(fp32, experts, k).route(0, logits, tokens, jidx, jw);
    for (int t = 0; t < tokens; t++) {
      for (int j = 0; j < k; j++) {
        int pos = -1;
        for (int q = 0; q < k; q++) if (jidx[t * k + q] == idx[t * k + j]) pos = q;
        int at = t, slot = j;
        assertTrue(pos >= 0, () -> "token " + at + ": moe-router chose expert " + idx[at * k + slot] + ", jlama "
            + Arrays.toString(Arrays.copyOfRange(jidx, at * k, at * k + k)));
        assertEquals(jw[t * k + pos], w[t * k + j], 1e-6, "token " + t + " expert " + idx[t * k + j]);
      }
    }
  }

  @Test
  void rejectsWhatItCannotRun(@TempDir Path dir) throws IOException {
    IllegalArgumentException bf16 = assertThrows(IllegalArgumentException.class,
        () -> new RoutedMixtralModel(com.github.tjake.jlama.model.AbstractModel.InferenceType.FULL_GENERATION, fp32.getConfig(),
            fp32.getWeights(), fp32.getTokenizer(), DType.BF16, DType.BF16, Optional.empty()));
    assertTrue(bf16.getMessage().contains("working memory must be F32"), bf16.getMessage());

    Files.writeString(dir.resolve("config.json"), "{\"model_type\": \"llama\"}");
    IllegalArgumentException llama = assertThrows(IllegalArgumentException.class,
        () -> RoutedMixtralModel.load(dir, RoutedMixtralModel.Precision.FP32));
    assertTrue(llama.getMessage().contains("LLAMA checkpoint"), llama.getMessage());

    AbstractTensor int8 = TinyModels.input(2, fp32.getConfig().embeddingLength, 3, DType.I8);
    IllegalArgumentException i8 = assertThrows(IllegalArgumentException.class, () -> fp32.moeLayer(0).forward(int8, Optional.empty()));
    assertTrue(i8.getMessage().contains("layer 0: matmul inputs of type I8 are not supported"), i8.getMessage());

    RoutedMixtralModel unrouted = RoutedMixtralModel.load(TinyModels.small(), RoutedMixtralModel.Precision.FP32);
    IllegalStateException none = assertThrows(IllegalStateException.class,
        () -> unrouted.moeLayer(0).forward(TinyModels.input(1, unrouted.getConfig().embeddingLength, 1, DType.F32), Optional.empty()));
    assertTrue(none.getMessage().contains("setRouter"), none.getMessage());
  }

  /** Mixtral's sparse MoE block in float64 from the layer's checkpoint tensors (HF MixtralSparseMoeBlock). */
  private static final class Reference {
    final double[][] gate;
    final double[][][] w1, w2, w3;
    final int experts, k;

    Reference(RoutedMixtralModel m, int layer) {
      experts = m.experts();
      k = m.topK();
      String p = "model.layers." + layer + ".block_sparse_moe.";
      gate = read(m, p + "gate.weight");
      w1 = new double[experts][][];
      w2 = new double[experts][][];
      w3 = new double[experts][][];
      for (int e = 0; e < experts; e++) {
        w1[e] = read(m, p + "experts." + e + ".w1.weight");
        w2[e] = read(m, p + "experts." + e + ".w2.weight");
        w3[e] = read(m, p + "experts." + e + ".w3.weight");
      }
    }

    static double[][] read(RoutedMixtralModel m, String name) {
      AbstractTensor t = m.getWeights().load(name);
      double[][] v = new double[t.shape().first()][t.shape().last()];
      for (int r = 0; r < v.length; r++)
        for (int c = 0; c < v[r].length; c++) v[r][c] = t.get(r, c);
      return v;
    }

    double[] forward(float[] xf) {
      double[] x = new double[xf.length];
      for (int i = 0; i < x.length; i++) x[i] = xf[i];
      double[] logits = matvec(gate, x);
      double max = Arrays.stream(logits).max().orElseThrow(), sum = 0;
      double[] p = new double[experts];
      for (int e = 0; e < experts; e++) sum += p[e] = Math.exp(logits[e] - max);
      Integer[] order = new Integer[experts];
      for (int e = 0; e < experts; e++) order[e] = e;
      Arrays.sort(order, (a, b) -> Double.compare(p[b], p[a]));
      double norm = 0;
      for (int j = 0; j < k; j++) norm += p[order[j]];
      double[] y = new double[x.length];
      for (int j = 0; j < k; j++) {
        int e = order[j];
        double[] h1 = matvec(w1[e], x), h3 = matvec(w3[e], x);
        double[] h = new double[h1.length];
        for (int i = 0; i < h.length; i++) h[i] = h1[i] / (1 + Math.exp(-h1[i])) * h3[i];
        double[] out = matvec(w2[e], h);
        for (int i = 0; i < y.length; i++) y[i] += p[e] / norm * out[i];
      }
      return y;
    }

    static double[] matvec(double[][] w, double[] x) {
      double[] r = new double[w.length];
      for (int i = 0; i < w.length; i++) {
        double s = 0;
        for (int j = 0; j < x.length; j++) s += w[i][j] * x[j];
        r[i] = s;
      }
      return r;
    }
  }
}
