// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
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
 * outputs are .npy files. Only what sections 1-5 define is loaded as typed fields; every other
 * expected output is listed in {@link Case#sectionSixOutputs}.
 */
final class GoldensV2 {
  private GoldensV2() {}

  static Path root() {
    String dir = System.getProperty("moerouter.goldens.v2");
    Path p = dir != null ? Paths.get(dir) : Paths.get("src/test/goldens_v2");
    if (!Files.isDirectory(p)) throw new IllegalStateException("golden v2 cases not found at " + p.toAbsolutePath()
        + " (set -Dmoerouter.goldens.v2=DIR)");
    return p;
  }

  static List<Case> all() {
    try (Stream<Path> dirs = Files.list(root())) {
      List<Case> cases = dirs.filter(d -> Files.exists(d.resolve("config.json"))).sorted().map(Case::load)
          .collect(Collectors.toList());
      if (cases.isEmpty()) throw new IllegalStateException("no golden v2 cases under " + root());
      return cases;
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** Expected outputs that sections 1-5 define (everything else is section 6: padding, losses, dropping). */
  static final List<String> SECTIONS_1_TO_5 = List.of("live_idx.npy", "live_weights.npy", "replay_weights.npy",
      "live_grad_logits.npy", "replay_grad_logits.npy", "live_nonfinite_rows.npy", "replay_nonfinite_rows.npy");
  static final List<String> INPUTS = List.of("config.json", "logits.npy", "bias.npy", "replay_idx.npy",
      "grad_weights.npy", "padding_mask.npy", "global_tokens_history.npy", "global_tokens_per_expert.npy",
      "global_num_tokens.npy");

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
    final boolean droppingOrPadding;
    // expected (null when absent, e.g. in ERROR cases)
    final int[] liveIdx;
    final double[] liveWeights, replayWeights, liveGradLogits, replayGradLogits;
    final byte[] liveNonfiniteRows, replayNonfiniteRows;
    final int[] tokensPerExpert;
    final int errorRowLive, errorRowReplay;  // -1 unless nonfinite = ERROR
    final List<String> sectionSixOutputs = new ArrayList<>();

    private Case(Path dir) throws IOException {
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
      droppingOrPadding = json.path("capacity_factor").isNumber() || json.path("padding_mask").asBoolean(false);
      logits = Npy.read(dir.resolve("logits.npy")).toFloatArray();
      replayIdx = Npy.read(dir.resolve("replay_idx.npy")).toIntArray();
      gradWeights = floats(Npy.read(dir.resolve("grad_weights.npy")));
      liveIdx = has("live_idx.npy") ? Npy.read(dir.resolve("live_idx.npy")).toIntArray() : null;
      liveWeights = doubles("live_weights.npy");
      replayWeights = doubles("replay_weights.npy");
      liveGradLogits = doubles("live_grad_logits.npy");
      replayGradLogits = doubles("replay_grad_logits.npy");
      liveNonfiniteRows = bytes("live_nonfinite_rows.npy");
      replayNonfiniteRows = bytes("replay_nonfinite_rows.npy");
      tokensPerExpert = has("tokens_per_expert.npy") ? Npy.read(dir.resolve("tokens_per_expert.npy")).toIntArray()
          : null;
      errorRowLive = json.path("expected_error_row_live").asInt(-1);
      errorRowReplay = json.path("expected_error_row_replay").asInt(-1);
      if (logits.length != (long) tokens * experts || replayIdx.length != tokens * k)
        throw new IOException("inconsistent shapes in " + dir);
      try (Stream<Path> files = Files.list(dir)) {
        for (Path f : files.sorted().collect(Collectors.toList())) {
          String n = f.getFileName().toString();
          if (INPUTS.contains(n) || SECTIONS_1_TO_5.contains(n)) continue;
          // tokens_per_expert equals the counts of live_idx unless dropping changes the routing map
          if (n.equals("tokens_per_expert.npy") && !json.path("capacity_factor").isNumber()) continue;
          sectionSixOutputs.add(n);
        }
      }
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

    private boolean has(String file) {
      return Files.exists(dir.resolve(file));
    }

    private double[] doubles(String file) throws IOException {
      if (!has(file)) return null;
      Npy.Array a = Npy.read(dir.resolve(file));
      double[] out = new double[a.size()];
      for (int i = 0; i < out.length; i++) out[i] = a.getDouble(i);
      return out;
    }

    private byte[] bytes(String file) throws IOException {
      if (!has(file)) return null;
      Npy.Array a = Npy.read(dir.resolve(file));
      byte[] out = new byte[a.size()];
      for (int i = 0; i < out.length; i++) out[i] = (byte) a.getDouble(i);
      return out;
    }

    private static float[] floats(Npy.Array a) {
      float[] out = new float[a.size()];
      for (int i = 0; i < out.length; i++) out[i] = (float) a.getDouble(i);
      return out;
    }

    static Case load(Path dir) {
      try {
        return new Case(dir);
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
    }

    @Override
    public String toString() {
      return name;
    }
  }
}
