// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.moerouter.trace.Npy;

/**
 * The reference cases of ../shared/goldens_v2 (docs/semantics.md sections 1-7, independent float64
 * implementation; format in its README.md): config.json names every option, inputs and expected
 * outputs are .npy files, all loaded as typed fields. {@link #CHECKED} names every expected output the
 * tests compare; a case holding any other file fails {@code GoldenV2Test}, so a format that grows cannot
 * go unchecked.
 */
final class GoldensV2 {
  private GoldensV2() {}

  static Path root() {
    return Goldens.root("moerouter.goldens.v2", "src/test/goldens_v2", "golden v2 cases");
  }

  static List<Case> all() {
    return Goldens.all(root(), Case::new, "golden v2 cases");
  }

  /** Every expected output of the format (README "Expected outputs"), each compared by GoldenV2Test. */
  static final List<String> CHECKED = List.of("live_idx.npy", "live_weights.npy", "replay_weights.npy",
      "live_grad_logits.npy", "replay_grad_logits.npy", "live_nonfinite_rows.npy", "replay_nonfinite_rows.npy",
      "tokens_per_expert.npy", "valid_tokens_per_expert.npy", "updated_bias.npy", "aux_tokens_per_expert.npy",
      "aux_loss.npy", "aux_grad_logits.npy", "seq_aux_loss.npy", "seq_aux_grad_logits.npy", "global_aux_loss.npy",
      "global_aux_grad_logits.npy", "z_loss.npy", "z_grad_logits.npy", "live_drop_routing_map.npy",
      "live_drop_routing_probs.npy", "live_drop_kept.npy", "live_drop_kept_counts.npy", "live_drop_grad_logits.npy",
      "replay_drop_routing_map.npy", "replay_drop_routing_probs.npy", "replay_drop_kept.npy",
      "replay_drop_kept_counts.npy", "replay_drop_grad_logits.npy");
  static final List<String> INPUTS = List.of("config.json", "logits.npy", "bias.npy", "replay_idx.npy",
      "grad_weights.npy", "padding_mask.npy", "global_tokens_history.npy", "global_tokens_per_expert.npy",
      "global_num_tokens.npy");

  /** One loss of section 6: its coefficient and expected files. */
  enum Loss {
    AUX("aux_loss_coeff", "aux_loss.npy", "aux_grad_logits.npy"),
    SEQ_AUX("seq_aux_loss_coeff", "seq_aux_loss.npy", "seq_aux_grad_logits.npy"),
    GLOBAL_AUX("global_aux_loss_coeff", "global_aux_loss.npy", "global_aux_grad_logits.npy"),
    Z("z_loss_coeff", "z_loss.npy", "z_grad_logits.npy");

    final String coeffKey, lossFile, gradFile;

    Loss(String coeffKey, String lossFile, String gradFile) {
      this.coeffKey = coeffKey;
      this.lossFile = lossFile;
      this.gradFile = gradFile;
    }
  }

  /** Token dropping of the live routing or of the replayed experts. */
  static final class Drop {
    final byte[] map, kept;
    final double[] probs, gradLogits;
    final int[] keptCounts;

    Drop(Case c, String prefix) throws IOException {
      map = c.bytes(prefix + "_drop_routing_map.npy");
      probs = c.doubles(prefix + "_drop_routing_probs.npy");
      kept = c.bytes(prefix + "_drop_kept.npy");
      keptCounts = c.ints(prefix + "_drop_kept_counts.npy");
      gradLogits = c.doubles(prefix + "_drop_grad_logits.npy");
    }
  }

  static final class Case {
    final String name;
    final Path dir;
    final JsonNode json;
    final RouterConfig config;
    final int tokens;
    final boolean bf16;
    final float[] logits;
    final int[] replayIdx;
    final float[] gradWeights;
    // expected (null when absent, e.g. in ERROR cases)
    final int[] liveIdx;
    final double[] liveWeights, replayWeights, liveGradLogits, replayGradLogits;
    final byte[] liveNonfiniteRows, replayNonfiniteRows;
    final int[] tokensPerExpert;
    final int errorRowLive, errorRowReplay;  // -1 unless nonfinite = ERROR
    // section 6 inputs (null / NaN when the case has none)
    final byte[] paddingMask;
    final double[][] globalHistory;
    final double[] globalTokens;
    final double globalNumTokens;
    // section 6 expected outputs (null when absent)
    final int[] validTokensPerExpert, auxTokensPerExpert;
    final double[] updatedBias;
    final float biasUpdateRate;
    final TokenDropping dropping;
    final Drop liveDrop, replayDrop;
    final List<String> unchecked = new ArrayList<>();

    Case(Path dir) throws IOException {
      this.dir = dir;
      name = dir.getFileName().toString();
      json = new ObjectMapper().readTree(dir.resolve("config.json").toFile());
      int experts = json.path("E").asInt(-1);
      int k = json.path("topk").asInt(-1);
      tokens = json.path("T").asInt(-1);
      bf16 = "bf16".equals(json.path("dtype").asText());
      RouterConfig.Builder b = RouterConfig.builder(experts, k)
          .scoreFunction(ScoreFunction.valueOf(json.path("score").asText().toUpperCase()))
          .preSoftmax(json.path("pre_softmax").asBoolean(false));
      if (json.path("bias").asBoolean(false)) b.expertBias(Npy.read(dir.resolve("bias.npy")).toFloatArray());
      if (json.path("groups").isNumber()) b.groups(json.path("groups").asInt(), json.path("group_topk").asInt());
      if (json.path("group_score").isTextual()) b.groupScore(GroupScore.valueOf(json.path("group_score").asText()));
      if (json.path("scale").isNumber()) b.scale((float) json.path("scale").asDouble());
      if (json.path("normalize").isBoolean()) b.normalize(json.path("normalize").asBoolean());
      if (json.path("nonfinite").isTextual()) b.nonFinite(NonFinitePolicy.valueOf(json.path("nonfinite").asText()));
      config = b.build();
      if (json.path("normalize").isBoolean() && config.normalize() != json.path("normalize").asBoolean())
        throw new IOException(name + ": normalize " + config.normalize() + " is not the case's effective value");
      logits = Npy.read(dir.resolve("logits.npy")).toFloatArray();
      replayIdx = Npy.read(dir.resolve("replay_idx.npy")).toIntArray();
      gradWeights = floats(Npy.read(dir.resolve("grad_weights.npy")));
      liveIdx = ints("live_idx.npy");
      liveWeights = doubles("live_weights.npy");
      replayWeights = doubles("replay_weights.npy");
      liveGradLogits = doubles("live_grad_logits.npy");
      replayGradLogits = doubles("replay_grad_logits.npy");
      liveNonfiniteRows = bytes("live_nonfinite_rows.npy");
      replayNonfiniteRows = bytes("replay_nonfinite_rows.npy");
      tokensPerExpert = ints("tokens_per_expert.npy");
      errorRowLive = json.path("expected_error_row_live").asInt(-1);
      errorRowReplay = json.path("expected_error_row_replay").asInt(-1);
      if (logits.length != (long) tokens * experts || replayIdx.length != tokens * k)
        throw new IOException("inconsistent shapes in " + dir);

      paddingMask = bytes("padding_mask.npy");
      if (json.path("padding_mask").asBoolean(false) != (paddingMask != null))
        throw new IOException(name + ": config.json padding_mask disagrees with padding_mask.npy");
      if (has("global_tokens_history.npy")) {
        Npy.Array h = Npy.read(dir.resolve("global_tokens_history.npy"));
        globalHistory = new double[(int) h.dim(0)][(int) h.dim(1)];
        for (int i = 0; i < h.size(); i++) globalHistory[i / experts][i % experts] = h.getDouble(i);
      } else {
        globalHistory = null;
      }
      globalTokens = doubles("global_tokens_per_expert.npy");
      double[] ng = doubles("global_num_tokens.npy");
      globalNumTokens = ng == null ? Double.NaN : ng[0];
      validTokensPerExpert = ints("valid_tokens_per_expert.npy");
      auxTokensPerExpert = ints("aux_tokens_per_expert.npy");
      updatedBias = doubles("updated_bias.npy");
      biasUpdateRate = json.path("bias_update_rate").isNumber() ? (float) json.path("bias_update_rate").asDouble() : 0f;
      if (json.path("capacity_factor").isNumber()) {
        dropping = TokenDropping.of(json.path("capacity_factor").asDouble(),
            DropPolicy.valueOf(json.path("drop_policy").asText().toUpperCase()), json.path("pad_to_capacity").asBoolean());
        if (dropping.capacity(tokens, k, experts) != Math.min(tokens, json.path("capacity").asLong()))
          throw new IOException(name + ": capacity " + dropping.capacity(tokens, k, experts) + " is not the case's "
              + json.path("capacity"));
        liveDrop = has("live_drop_routing_map.npy") ? new Drop(this, "live") : null;
        replayDrop = has("replay_drop_routing_map.npy") ? new Drop(this, "replay") : null;
      } else {
        dropping = null;
        liveDrop = replayDrop = null;
      }
      try (Stream<Path> files = Files.list(dir)) {
        for (Path f : files.sorted().collect(Collectors.toList())) {
          String n = f.getFileName().toString();
          if (!INPUTS.contains(n) && !CHECKED.contains(n)) unchecked.add(n);
        }
      }
    }

    /** The coefficient of a loss, or 0 when the case leaves it out. */
    float coeff(Loss loss) {
      JsonNode n = json.path(loss.coeffKey);
      return n.isNumber() ? (float) n.asDouble() : 0f;
    }

    /** The LossConfig of one loss alone (the format has one gradient file per loss). */
    LossConfig lossConfig(Loss loss) {
      LossConfig.Builder b = LossConfig.builder();
      float c = coeff(loss);
      switch (loss) {
        case AUX: return b.auxLoss(c).build();
        case SEQ_AUX: return b.seqAuxLoss(c, json.path("seq_length").asInt(), SeqLayout.valueOf(json.path("seq_layout").asText())).build();
        case GLOBAL_AUX: return b.globalAuxLoss(c).build();
        default: return b.zLoss(c).build();
      }
    }

    double expectedLoss(Loss loss) throws IOException {
      return doubles(loss.lossFile)[0];
    }

    double[] expectedGrad(Loss loss) throws IOException {
      return doubles(loss.gradFile);
    }

    boolean error() {
      return config.nonFinite() == NonFinitePolicy.ERROR;
    }

    /** The logits as raw bf16 bits (the case holds bf16 values, so this is exact). */
    short[] logitsBf16() {
      short[] h = new short[logits.length];
      for (int i = 0; i < h.length; i++) {
        int bits = Float.floatToRawIntBits(logits[i]);
        if ((bits & 0xffff) != 0 && !Float.isNaN(logits[i]))
          throw new IllegalStateException(name + ": logit " + i + " is not a bf16 value");
        h[i] = (short) (bits >>> 16);
      }
      return h;
    }

    boolean has(String file) {
      return Files.exists(dir.resolve(file));
    }

    double[] doubles(String file) throws IOException {
      return has(file) ? Goldens.doubles(Npy.read(dir.resolve(file))) : null;
    }

    byte[] bytes(String file) throws IOException {
      if (!has(file)) return null;
      Npy.Array a = Npy.read(dir.resolve(file));
      byte[] out = new byte[a.size()];
      for (int i = 0; i < out.length; i++) out[i] = (byte) a.getDouble(i);
      return out;
    }

    int[] ints(String file) throws IOException {
      return has(file) ? Npy.read(dir.resolve(file)).toIntArray() : null;
    }

    private static float[] floats(Npy.Array a) {
      float[] out = new float[a.size()];
      for (int i = 0; i < out.length; i++) out[i] = (float) a.getDouble(i);
      return out;
    }

    @Override
    public String toString() {
      return name;
    }
  }
}
