// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.github.tjake.jlama.model.AbstractModel;
import com.github.tjake.jlama.model.ModelSupport;
import com.github.tjake.jlama.model.mixtral.MixtralModel;
import com.github.tjake.jlama.safetensors.DType;
import com.github.tjake.jlama.safetensors.prompt.PromptContext;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.moerouter.Backend;
import org.moerouter.RoutingAgreement;
import org.moerouter.trace.RoutingTrace;
import org.moerouter.trace.TraceFiles;
import org.moerouter.trace.TraceMetrics;

/**
 * R3 end to end on a tiny random Mixtral (8 layers, 8 experts top-2, bf16 weights) made by the test.
 *
 * <p>The rollout is jlama's inference path for a bf16 checkpoint ({@code Precision.CHECKPOINT}: every matmul
 * input rounded to bf16), prompt in one batch then one token per forward. The second run is a trainer's
 * pass over the same tokens, teacher-forced in one batch, in fp32 ({@code Precision.FP32}: the same bf16
 * weights widened, fp32 matmul inputs): a perturbed dtype path and another batch size.
 */
class R3EndToEndTest {
  private static final int NEW_TOKENS = 48;
  @TempDir static Path tmp;
  private static Path traceFile;
  private static int[] sequence;  // prompt + generated
  private static int promptLength;
  private static RoutingTrace rolloutSeen;  // what the rollout's layers used, from an observer
  private static RoutedMixtralModel trainer;

  @BeforeAll
  static void rollout() throws IOException {
    RoutedMixtralModel rollout = RoutedMixtralModel.load(TinyModels.r3(), RoutedMixtralModel.Precision.CHECKPOINT);
    assertEquals(DType.BF16, rollout.matmulInputType(), "the rollout must take jlama's bf16 path");
    int[] prompt = rollout.encodePrompt(PromptContext.of("The quick brown fox jumps over the lazy dog"));
    promptLength = prompt.length;
    try (MixtralRouting routing = new MixtralRouting(rollout.experts(), rollout.topK(), rollout.layers(), Backend.AUTO)) {
      rollout.setRouter(routing);
      MixtralRouting.Log seen = new MixtralRouting.Log(rollout.layers(), rollout.topK());
      routing.observe(seen);
      routing.record();
      sequence = Generation.greedy(rollout, prompt, NEW_TOKENS, Generation.Prefill.BATCHED, -1);
      traceFile = tmp.resolve("rollout.safetensors");
      routing.writeRecording("tiny-r3", traceFile);
      rolloutSeen = seen.trace("tiny-r3", rollout.experts(), routing.scoreFunction());
    }
    trainer = RoutedMixtralModel.load(TinyModels.r3(), RoutedMixtralModel.Precision.FP32);
    assertEquals(DType.F32, trainer.matmulInputType());
  }

  /** The tokens a trainer feeds: the rollout's sequence without its last (sampled, never fed) token. */
  private static int[] fed() {
    return java.util.Arrays.copyOf(sequence, sequence.length - 1);
  }

  @Test
  void theTraceFileHoldsEveryLayersRoutingOfTheRollout() throws IOException {
    RoutingTrace t = TraceFiles.read(traceFile);
    assertEquals(1, t.samples());
    assertEquals(sequence.length - 1, t.totalTokens());
    assertEquals(8, t.layers());
    assertEquals(2, t.topK());
    assertEquals(8, t.experts());
    assertEquals("softmax", t.scoreFunction());
    assertTrue(t.contentEquals(rolloutSeen), "the trace file is not what the rollout's layers used");
  }

  @Test
  void withoutReplayTheTrainerRoutesSomeTokensOfSomeLayersElsewhere() throws IOException {
    RoutingTrace recorded = TraceFiles.read(traceFile);
    try (MixtralRouting routing = new MixtralRouting(trainer.experts(), trainer.topK(), trainer.layers(), Backend.AUTO)) {
      trainer.setRouter(routing);
      MixtralRouting.Log live = new MixtralRouting.Log(trainer.layers(), trainer.topK());
      routing.observe(live);
      Generation.teacherForced(trainer, fed(), 256);
      RoutingAgreement.Result a = TraceMetrics.agreement(recorded, live.trace("tiny-r3", trainer.experts(), routing.scoreFunction()));
      // Expert sets, not just their order: 23 of 696 (token, layer) rows in 15 tokens with this model and prompt.
      assertTrue(a.differingRows() > 0, "fp32 teacher forcing chose the rollout's experts everywhere: " + a);
      int layersWithDifferences = 0;
      for (int l = 0; l < a.layers(); l++) if (a.differingRows(l) > 0) layersWithDifferences++;
      assertTrue(layersWithDifferences > 1, "differences in one layer only: " + a);
      assertTrue(a.differingRowFraction() < 0.2, "too many differences for a rounding-level perturbation: " + a);
    }
  }

  @Test
  void withReplayTheTrainerUsesExactlyTheRecordedExpertsWithWeightsFromItsOwnLogits() throws IOException {
    RoutingTrace recorded = TraceFiles.read(traceFile);
    try (MixtralRouting routing = new MixtralRouting(trainer.experts(), trainer.topK(), trainer.layers(), Backend.AUTO)) {
      trainer.setRouter(routing);
      MixtralRouting.Log used = new MixtralRouting.Log(trainer.layers(), trainer.topK());
      List<String> badWeights = new ArrayList<>();
      routing.observe((layer, tokens, logits, idx, w) -> {
        used.routed(layer, tokens, logits, idx, w);
        int e = trainer.experts(), k = trainer.topK();
        for (int t = 0; t < tokens; t++) {
          // Mixtral's weights from this run's logits: softmax over the k forced experts, in float64.
          double max = Double.NEGATIVE_INFINITY, sum = 0;
          for (int j = 0; j < k; j++) max = Math.max(max, logits[t * e + idx[t * k + j]]);
          for (int j = 0; j < k; j++) sum += Math.exp(logits[t * e + idx[t * k + j]] - max);
          for (int j = 0; j < k; j++) {
            double want = Math.exp(logits[t * e + idx[t * k + j]] - max) / sum;
            if (Math.abs(w[t * k + j] - want) > 1e-6) badWeights.add("layer " + layer + " token " + t + ": " + w[t * k + j] + " vs " + want);
          }
        }
      });
      routing.replay(recorded, 0);
      Generation.teacherForced(trainer, fed(), 256);
      for (int l = 0; l < trainer.layers(); l++) assertEquals(sequence.length - 1, routing.replayedTokens(l), "layer " + l);
      RoutingTrace replayed = used.trace("tiny-r3", trainer.experts(), routing.scoreFunction());
      assertTrue(replayed.contentEquals(recorded), "replay did not reproduce the recording: "
          + TraceMetrics.agreement(recorded, replayed));
      assertTrue(badWeights.isEmpty(), "weights not from the live logits: " + badWeights);

      // Replay again over the same sequence cut differently (forward calls of 16 tokens): same experts.
      MixtralRouting.Log again = new MixtralRouting.Log(trainer.layers(), trainer.topK());
      routing.observe(again);
      routing.rewind();
      Generation.teacherForced(trainer, fed(), 16);
      assertTrue(again.trace("tiny-r3", trainer.experts(), routing.scoreFunction()).contentEquals(recorded));
    }
  }

  @ParameterizedTest(name = "{0}")
  @EnumSource(value = RoutedMixtralModel.Precision.class, names = {"CHECKPOINT", "FP32"})
  void liveMoeRouterGeneratesTheTokensOfJlamasOwnMoEBlock(RoutedMixtralModel.Precision precision) throws IOException {
    Path dir = TinyModels.r3();
    // jlama's own Mixtral, MoEBlock and all, loaded by jlama.
    AbstractModel jlama = ModelSupport.loadModel(dir.toFile(), null, DType.F32, DType.F32, precision.modelQType, Optional.empty());
    assertTrue(jlama.getClass() == MixtralModel.class, jlama.getClass().getName());
    int[] prompt = jlama.encodePrompt(PromptContext.of("The quick brown fox jumps over the lazy dog"));
    // jlama is not reproducible while the JIT compiles its kernels: on the bf16 path the first generation in
    // a JVM can differ from the next ones (an ulp of a reduction flips a bf16 rounding, then a near-tie), so
    // both sides are compared warm, after a generation each.
    Generation.greedy(jlama, prompt, 32, Generation.Prefill.STEPWISE, -1);
    int[] theirs = Generation.greedy(jlama, prompt, 32, Generation.Prefill.STEPWISE, -1);

    RoutedMixtralModel ours = RoutedMixtralModel.load(dir, precision);
    ours.setCombine(MoeRouterFeedForward.Combine.UNWEIGHTED);  // jlama 0.8.4 does not weight (tjake/Jlama#201)
    JlamaTopK jlamaRouting = new JlamaTopK(ours, ours.experts(), ours.topK());
    List<String> mismatches = new ArrayList<>();
    int[] checked = {0};
    try (MixtralRouting routing = new MixtralRouting(ours.experts(), ours.topK(), ours.layers(), Backend.AUTO)) {
      ours.setRouter(routing);
      Generation.greedy(ours, prompt, 32, Generation.Prefill.STEPWISE, -1);
      routing.observe((layer, tokens, logits, idx, w) -> {
        int k = ours.topK();
        int[] jidx = new int[tokens * k];
        float[] jw = new float[tokens * k];
        jlamaRouting.route(layer, logits, tokens, jidx, jw);
        for (int t = 0; t < tokens; t++)
          for (int j = 0; j < k; j++) {
            int pos = -1;
            for (int q = 0; q < k; q++) if (jidx[t * k + q] == idx[t * k + j]) pos = q;
            if (pos < 0 || Math.abs(jw[t * k + pos] - w[t * k + j]) > 1e-6)
              mismatches.add("layer " + layer + " token " + t + ": moe-router " + idx[t * k + j] + " w=" + w[t * k + j] + ", jlama "
                  + java.util.Arrays.toString(java.util.Arrays.copyOfRange(jidx, t * k, t * k + k)));
            checked[0]++;
          }
      });
      // Warm, greedy tokens survive the last-bit noise of jlama's reductions: the smallest top-1/top-2 logit
      // gap on these 32 steps is 5e-5 (fp32) and 8e-3 (bf16 path), against about 1e-6 of noise.
      int[] mine = Generation.greedy(ours, prompt, 32, Generation.Prefill.STEPWISE, -1);
      assertArrayEquals(theirs, mine, precision + ": moe-router routing generated other tokens than jlama's MoEBlock");
    }
    assertEquals((prompt.length + 31) * ours.layers() * ours.topK(), checked[0], "every routed row was compared");
    assertTrue(mismatches.isEmpty(), "moe-router and jlama's top-k disagree: " + mismatches);
  }

  @Test
  void batchedAndStepwisePromptsGenerateTheSameTokensInFp32() throws IOException {
    // jlama's own MixtralModel does not (its MoEBlock mixes the rows of a batch): see the README.
    try (MixtralRouting routing = new MixtralRouting(trainer.experts(), trainer.topK(), trainer.layers(), Backend.AUTO)) {
      trainer.setRouter(routing);
      int[] prompt = java.util.Arrays.copyOf(sequence, promptLength);
      assertArrayEquals(Generation.greedy(trainer, prompt, 24, Generation.Prefill.STEPWISE, -1),
          Generation.greedy(trainer, prompt, 24, Generation.Prefill.BATCHED, -1));
    }
  }

  @Test
  void replayRefusesTracesOfAnotherShapeAndRunsPastTheRecording() throws IOException {
    RoutingTrace recorded = TraceFiles.read(traceFile);
    try (MixtralRouting routing = new MixtralRouting(16, 2, 8, Backend.AUTO)) {
      IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> routing.replay(recorded, 0));
      assertTrue(e.getMessage().contains("16 top-2"), e.getMessage());
    }
    try (MixtralRouting routing = new MixtralRouting(8, 2, 9, Backend.AUTO)) {
      IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> routing.replay(recorded, 0));
      assertTrue(e.getMessage().contains("no decoder layer 8"), e.getMessage());
    }
    try (MixtralRouting routing = new MixtralRouting(8, 2, 8, Backend.AUTO)) {
      trainer.setRouter(routing);
      routing.replay(recorded, 0);
      int[] longer = java.util.Arrays.copyOf(sequence, sequence.length + 1);
      IllegalStateException e = assertThrows(IllegalStateException.class, () -> Generation.teacherForced(trainer, longer, 256));
      assertTrue(e.getMessage().contains("layer 0: replay past the end of the recorded sample (" + (sequence.length - 1) + " tokens"),
          e.getMessage());
    }
  }
}
