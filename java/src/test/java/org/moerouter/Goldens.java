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
 * The reference cases in java/src/test/goldens, or ../shared/goldens when present (independent float64
 * implementation of docs/semantics.md).
 */
final class Goldens {
  private Goldens() {}

  static Path root() {
    return root("moerouter.goldens", "src/test/goldens", "golden cases");
  }

  static List<Case> all() {
    return all(root(), Case::new, "golden cases");
  }

  /** A reference folder: the system property's, else the in-repository copy. */
  static Path root(String property, String inRepository, String what) {
    String dir = System.getProperty(property);
    Path p = dir != null ? Paths.get(dir) : Paths.get(inRepository);
    if (!Files.isDirectory(p)) throw new IllegalStateException(what + " not found at " + p.toAbsolutePath()
        + " (set -D" + property + "=DIR)");
    return p;
  }

  /** Reads one case from its folder. */
  interface Loader<C> {
    C load(Path dir) throws IOException;
  }

  /** Every case folder (one holding a config.json) under root, by name; none at all is an error. */
  static <C> List<C> all(Path root, Loader<C> loader, String what) {
    try (Stream<Path> dirs = Files.list(root)) {
      List<C> cases = new ArrayList<>();
      for (Path d : dirs.filter(x -> Files.exists(x.resolve("config.json"))).sorted().collect(Collectors.toList()))
        cases.add(loader.load(d));
      if (cases.isEmpty()) throw new IllegalStateException("no " + what + " under " + root);
      return cases;
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  static final class Case {
    final String name;
    final RouterConfig config;
    final int tokens;
    final float[] logits;
    final int[] liveIdx;
    final int[] replayIdx;
    final double[] liveWeights;
    final double[] replayWeights;
    final float[] gradWeights;
    final double[] liveGradLogits;
    final double[] replayGradLogits;

    Case(Path dir) throws IOException {
      name = dir.getFileName().toString();
      JsonNode json = new ObjectMapper().readTree(dir.resolve("config.json").toFile());
      int experts = json.path("E").asInt(-1);
      int k = json.path("topk").asInt(-1);
      tokens = json.path("T").asInt(-1);
      RouterConfig.Builder b = RouterConfig.builder(experts, k)
          .scoreFunction("sigmoid".equals(json.path("score").asText()) ? ScoreFunction.SIGMOID : ScoreFunction.SOFTMAX)
          .preSoftmax(json.path("pre_softmax").asBoolean(false));
      if (json.path("bias").asBoolean(false)) b.expertBias(Npy.read(dir.resolve("bias.npy")).toFloatArray());
      int groups = json.path("groups").asInt(0);
      if (groups > 0) b.groups(groups, json.path("group_topk").asInt(0));
      if (json.path("scale").isNumber()) b.scale((float) json.path("scale").asDouble());
      config = b.build();
      logits = Npy.read(dir.resolve("logits.npy")).toFloatArray();
      liveIdx = Npy.read(dir.resolve("live_idx.npy")).toIntArray();
      replayIdx = Npy.read(dir.resolve("replay_idx.npy")).toIntArray();
      liveWeights = doubles(Npy.read(dir.resolve("live_weights.npy")));
      replayWeights = doubles(Npy.read(dir.resolve("replay_weights.npy")));
      gradWeights = Npy.read(dir.resolve("grad_weights.npy")).toFloatArray();
      liveGradLogits = doubles(Npy.read(dir.resolve("live_grad_logits.npy")));
      replayGradLogits = doubles(Npy.read(dir.resolve("replay_grad_logits.npy")));
      if (logits.length != (long) tokens * experts || liveIdx.length != tokens * k)
        throw new IOException("inconsistent shapes in " + dir);
    }

    @Override
    public String toString() {
      return name;
    }
  }

  static double[] doubles(Npy.Array a) {
    double[] out = new double[a.size()];
    for (int i = 0; i < out.length; i++) out[i] = a.getDouble(i);
    return out;
  }
}
