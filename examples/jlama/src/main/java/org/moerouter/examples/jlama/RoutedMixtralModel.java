// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama;

import com.github.tjake.jlama.model.CausalSelfAttention;
import com.github.tjake.jlama.model.ModelSupport;
import com.github.tjake.jlama.model.RMSNorm;
import com.github.tjake.jlama.model.TransformerBlock;
import com.github.tjake.jlama.model.llama.LlamaTokenizer;
import com.github.tjake.jlama.model.mixtral.MixtralConfig;
import com.github.tjake.jlama.model.mixtral.MixtralModel;
import com.github.tjake.jlama.safetensors.Config;
import com.github.tjake.jlama.safetensors.DType;
import com.github.tjake.jlama.safetensors.SafeTensorSupport;
import com.github.tjake.jlama.safetensors.WeightLoader;
import com.github.tjake.jlama.safetensors.tokenizer.Tokenizer;
import com.github.tjake.jlama.tensor.AbstractTensor;
import com.github.tjake.jlama.tensor.operations.TensorOperationsProvider;
import com.github.tjake.jlama.util.JsonSupport;
import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;
import java.util.stream.IntStream;

/**
 * jlama's Mixtral with every {@code MoEBlock} replaced by a {@link MoeRouterFeedForward}: routing by an
 * {@link ExpertRouter} (moe-router), experts and everything else jlama's own.
 *
 * <p>The extension point is jlama's per-model assembly hook, {@code loadTransformerBlockWeights()}, which
 * {@link MixtralModel} overrides to build its layers; this subclass overrides it again and assembles each
 * layer from jlama's public parts (CausalSelfAttention, RMSNorm, TransformerBlock, WeightLoader) and
 * the checkpoint's Mixtral tensor names, with the routed layer where MixtralModel puts its MoEBlock.
 * Embedding, output head, attention, KV cache, tokenizer and loading stay MixtralModel's.
 *
 * <pre>{@code
 * RoutedMixtralModel model = RoutedMixtralModel.load(dir, Precision.CHECKPOINT);
 * try (MixtralRouting routing = new MixtralRouting(8, 2, model.layers(), Backend.AUTO)) {
 *   model.setRouter(routing);
 *   int[] tokens = Generation.greedy(model, model.encode("Hello"), 32);
 * }
 * }</pre>
 *
 * <p>Traps: the router must be set before the first forward (jlama builds the layers inside its
 * constructor, before this class can hold anything); working memory is fp32 (jlama 0.8.4's bf16 working
 * memory loses half of every row it copies: {@code BFloat16BufferTensor.copyFrom} counts bytes as
 * elements); no distributed (sharded) inference.
 */
public final class RoutedMixtralModel extends MixtralModel {
  /** How weights and matmul inputs are held; the working memory (activations, KV cache) is fp32 in all. */
  public enum Precision {
    /**
     * jlama's default for the checkpoint as stored: bf16 weights stay bf16 and jlama rounds every matmul
     * input to bf16 (an inference engine's bf16 path); weights stored otherwise stay as stored, with fp32
     * matmul inputs.
     */
    CHECKPOINT(Optional.empty(), DType.F32),
    /** Weights widened to fp32 at load and fp32 matmul inputs (a trainer's fp32 path). */
    FP32(Optional.of(DType.F32), DType.F32);

    final Optional<DType> modelQType;
    final DType workingQType;

    Precision(Optional<DType> modelQType, DType workingQType) {
      this.modelQType = modelQType;
      this.workingQType = workingQType;
    }
  }

  private volatile ExpertRouter router;
  private volatile MoeRouterFeedForward.Combine combine = MoeRouterFeedForward.Combine.MIXTRAL;
  private ExpertScratch scratch;
  // Filled by loadTransformerBlockWeights, which jlama calls inside super(...): no initializer, or Java
  // would reset it after super(...) returns.
  private MoeRouterFeedForward[] moeLayers;

  public RoutedMixtralModel(InferenceType inferenceType, Config config, WeightLoader weights, Tokenizer tokenizer,
      DType workingDType, DType workingQType, Optional<DType> modelQType) {
    super(inferenceType, config, weights, tokenizer, requireFp32(workingDType), workingQType, modelQType);
  }

  /**
   * Loads a Mixtral checkpoint directory (config.json with {@code model_type: mixtral}, safetensors, a
   * Llama/Mistral tokenizer.json), as jlama's {@code ModelSupport.loadModel} does, into this class.
   */
  public static RoutedMixtralModel load(Path dir, Precision precision) throws IOException {
    File config = dir.resolve("config.json").toFile();
    if (!config.isFile()) throw new IllegalArgumentException(dir + " holds no config.json: not a model directory");
    ModelSupport.ModelType type = SafeTensorSupport.detectModel(config);
    if (type != ModelSupport.ModelType.MIXTRAL)
      throw new IllegalArgumentException(dir + " is a " + type + " checkpoint (config.json model_type); this example routes Mixtral");
    if (!Files.isRegularFile(dir.resolve("tokenizer.json"))) throw new IllegalArgumentException(dir + " holds no tokenizer.json");
    MixtralConfig c = JsonSupport.om.readValue(config, MixtralConfig.class);
    c.setWorkingDirectory(null);
    return new RoutedMixtralModel(InferenceType.FULL_GENERATION, c, SafeTensorSupport.loadWeights(dir.toFile()),
        new LlamaTokenizer(dir), DType.F32, precision.workingQType, precision.modelQType);
  }

  private static DType requireFp32(DType working) {
    if (working != DType.F32)
      throw new IllegalArgumentException("working memory must be F32, got " + working + ": jlama 0.8.4's bf16 working memory"
          + " copies half of each row (BFloat16BufferTensor.copyFrom)");
    return working;
  }

  @Override
  protected TransformerBlock[] loadTransformerBlockWeights() {
    MixtralConfig mc = (MixtralConfig) c;
    if (c.dctx().layerStart != 0 || c.dctx().numberOfLayers != c.numberOfLayers || c.dctx().hiddenSegmentLength != c.hiddenLength)
      throw new UnsupportedOperationException("RoutedMixtralModel: distributed (sharded) jlama is not supported");
    DType qType = modelQType.orElse(modelDType);
    TransformerBlock[] blocks = new TransformerBlock[c.numberOfLayers];
    MoeRouterFeedForward[] routed = new MoeRouterFeedForward[c.numberOfLayers];
    IntStream.range(0, c.numberOfLayers).parallel().forEach(i -> {
      String base = "model.layers." + i + ".";
      String attn = base + "self_attn.";
      CausalSelfAttention attention = new CausalSelfAttention(this, i,
          weights.load(attn + "q_proj.weight", c.dctx(), true, false).quantize(qType),
          weights.load(attn + "k_proj.weight", c.dctx(), true, false).quantize(qType),
          weights.load(attn + "v_proj.weight", c.dctx(), true, false).quantize(qType),
          weights.load(attn + "o_proj.weight").quantize(qType));
      String moe = base + "block_sparse_moe.";
      AbstractTensor[] w1 = new AbstractTensor[mc.numberOfExperts];
      AbstractTensor[] w2 = new AbstractTensor[mc.numberOfExperts];
      AbstractTensor[] w3 = new AbstractTensor[mc.numberOfExperts];
      for (int e = 0; e < mc.numberOfExperts; e++) {
        String x = moe + "experts." + e + ".";
        w1[e] = weights.load(x + "w1.weight", c.dctx(), true, false).quantize(qType);
        w2[e] = weights.load(x + "w2.weight").quantize(qType);
        w3[e] = weights.load(x + "w3.weight", c.dctx(), true, false).quantize(qType);
      }
      MoeRouterFeedForward ff = new MoeRouterFeedForward(this, i, mc.numberOfExperts, mc.numberOfExpertsPerToken,
          c.activationFunction, weights.load(moe + "gate.weight").quantize(qType), w1, w2, w3);
      routed[i] = ff;
      blocks[i] = new TransformerBlock(this, i, new RMSNorm(this, weights.load(base + "input_layernorm.weight").quantize(qType)),
          attention, new RMSNorm(this, weights.load(base + "post_attention_layernorm.weight").quantize(qType)), ff);
    });
    moeLayers = routed;
    return blocks;
  }

  /** The MoE layer of transformer layer {@code layer}. */
  public MoeRouterFeedForward moeLayer(int layer) {
    return moeLayers[layer];
  }

  /** Routes every MoE layer from the next forward on. */
  public void setRouter(ExpertRouter router) {
    this.router = router;
  }

  ExpertRouter router() {
    ExpertRouter r = router;
    if (r == null) throw new IllegalStateException("RoutedMixtralModel: no router; call setRouter(...) before the first forward");
    return r;
  }

  public void setCombine(MoeRouterFeedForward.Combine combine) {
    this.combine = java.util.Objects.requireNonNull(combine, "combine");
  }

  MoeRouterFeedForward.Combine combine() {
    return combine;
  }

  public MixtralConfig config() {
    return (MixtralConfig) c;
  }

  public int layers() {
    return c.numberOfLayers;
  }

  public int experts() {
    return config().numberOfExperts;
  }

  public int topK() {
    return config().numberOfExpertsPerToken;
  }

  /** The type matmul inputs are rounded to (bf16 for a bf16 checkpoint at {@link Precision#CHECKPOINT}). */
  public DType matmulInputType() {
    return workingQType;
  }

  /** h as the down-projection reads it: itself when already of the matmul input type, else a rounded copy to close. */
  AbstractTensor matmulInput(AbstractTensor h) {
    if (h.dType() == workingQType) return h;
    return TensorOperationsProvider.get().quantize(h, workingQType, 0, h.shape().last());
  }

  synchronized ExpertScratch expertScratch() {
    if (scratch == null) scratch = new ExpertScratch(c.embeddingLength, c.hiddenLength);
    return scratch;
  }
}
