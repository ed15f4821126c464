package org.moerouter;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.moerouter.trace.Npy;

/** The reference cases of ../shared/goldens (independent float64 implementation of the spec). */
final class Goldens {
  private Goldens() {}

  static Path root() {
    String dir = System.getProperty("moerouter.goldens");
    Path p = dir != null ? Paths.get(dir) : Paths.get("src/test/goldens");
    if (!Files.isDirectory(p)) throw new IllegalStateException("golden cases not found at " + p.toAbsolutePath()
        + " (set -Dmoerouter.goldens=DIR)");
    return p;
  }

  static List<Case> all() {
    try (Stream<Path> dirs = Files.list(root())) {
      List<Case> cases = dirs.filter(d -> Files.exists(d.resolve("config.json"))).sorted().map(Case::load)
          .collect(Collectors.toList());
      if (cases.isEmpty()) throw new IllegalStateException("no golden cases under " + root());
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

    private Case(Path dir) throws IOException {
      name = dir.getFileName().toString();
      String json = Files.readString(dir.resolve("config.json"));
      int experts = intField(json, "E", -1);
      int k = intField(json, "topk", -1);
      tokens = intField(json, "T", -1);
      RouterConfig.Builder b = RouterConfig.builder(experts, k)
          .scoreFunction("sigmoid".equals(stringField(json, "score")) ? ScoreFunction.SIGMOID : ScoreFunction.SOFTMAX)
          .preSoftmax(boolField(json, "pre_softmax"));
      if (boolField(json, "bias")) b.expertBias(Npy.read(dir.resolve("bias.npy")).toFloatArray());
      int groups = intField(json, "groups", 0);
      if (groups > 0) b.groups(groups, intField(json, "group_topk", 0));
      String scale = rawField(json, "scale");
      if (scale != null && !scale.equals("null")) b.scale(Float.parseFloat(scale));
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

  private static double[] doubles(Npy.Array a) {
    double[] out = new double[a.size()];
    for (int i = 0; i < out.length; i++) out[i] = a.getDouble(i);
    return out;
  }

  private static String rawField(String json, String key) {
    Matcher m = Pattern.compile("\"" + key + "\"\\s*:\\s*([^,}\\s]+)").matcher(json);
    return m.find() ? m.group(1).replace("\"", "") : null;
  }

  private static int intField(String json, String key, int dflt) {
    String v = rawField(json, key);
    return v == null || v.equals("null") ? dflt : Integer.parseInt(v);
  }

  private static boolean boolField(String json, String key) {
    return "true".equals(rawField(json, key));
  }

  private static String stringField(String json, String key) {
    return rawField(json, key);
  }
}
