// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.FileSystemException;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.Locale;
import java.util.Set;
import org.moerouter.Backend;
import org.moerouter.MinusOneRows;
import org.moerouter.MoeRouter;
import org.moerouter.RouterConfig;
import org.moerouter.ScoreFunction;
import org.moerouter.replay.LayerKey;
import org.moerouter.replay.ReplayAction;
import org.moerouter.replay.ReplayRegistry;
import org.moerouter.replay.RouterReplay;
import org.moerouter.trace.Npy;
import org.moerouter.trace.TraceFormatException;

/** {@code moe-router route}: routes (or replays) a logits .npy file and writes idx/weights(/grad) .npy files. */
final class RouteCommand {
  private RouteCommand() {}

  static final String USAGE = "route --logits L.npy [--bias B.npy] --score softmax|sigmoid [--pre-softmax] --topk K"
      + " [--groups G --group-topk GK] [--scale S] [--replay IDX.npy [--replay-mask M.npy] [--minus-one-rows reject|live|arange]]"
      + " [--grad-weights DW.npy] [--backend java|cpu|cuda|native|auto] --out DIR";

  static final String HELP = String.join("\n",
      "usage: moe-router " + USAGE,
      "Routes (or replays) the logits [tokens, experts] of a .npy file and writes DIR/idx.npy [tokens, k] int32,",
      "DIR/weights.npy [tokens, k] float32 and, with --grad-weights, DIR/grad_logits.npy [tokens, experts].",
      "The three files are replaced as a set: a failed run leaves the previous set, a run without",
      "--grad-weights removes an old grad_logits.npy.",
      "  --logits L.npy        float32 or float64 [tokens, experts]",
      "  --score FN            softmax or sigmoid",
      "  --topk K              experts per token",
      "  --pre-softmax         softmax only: rank and weight by the softmax over all experts",
      "  --groups G --group-topk GK   group-limited routing: keep the best GK of G expert groups (both >= 1)",
      "  --bias B.npy          sigmoid only: expert bias [experts] added for selection",
      "  --scale S             multiplies the weights (default 1)",
      "  --replay IDX.npy      integer [tokens, k]: use these experts instead of selecting (-1 rows: see below)",
      "  --replay-mask M.npy   [tokens]: rows with 0 are routed live (needs --replay)",
      "  --minus-one-rows P    rows of -1 (slime/miles padding): reject (default), live (route them live) or",
      "                        arange (experts 0..k-1) (needs --replay)",
      "  --grad-weights DW.npy float [tokens, k]: also write the gradient w.r.t. the logits",
      "  --backend B           java, cpu, cuda, native (cpu or cuda) or auto (default)",
      "  --out DIR             output folder (created if missing)");

  static final String[] OUTPUTS = {"idx.npy", "weights.npy", "grad_logits.npy"};

  static int run(String[] argv, PrintStream out) throws IOException {
    Args a = Args.parse(argv, 1,
        Set.of("logits", "bias", "score", "topk", "groups", "group-topk", "scale", "replay", "replay-mask",
            "minus-one-rows", "grad-weights", "backend", "out"),
        Set.of("pre-softmax"));
    if (a.flag("help")) {
      out.println(HELP);
      return 0;
    }
    if (!a.positional.isEmpty()) throw new Args.UsageException("unexpected argument '" + a.positional.get(0) + "'");
    Path logitsPath = Paths.get(a.require("logits"));
    Path outDir = Paths.get(a.require("out"));
    Backend backend = Main.backend(a.get("backend"));
    String score = a.require("score").toLowerCase(Locale.ROOT);
    if (!score.equals("softmax") && !score.equals("sigmoid"))
      throw new Args.UsageException("--score must be softmax or sigmoid, got '" + score + "'");
    if (a.get("topk") == null) throw new Args.UsageException("missing required option --topk");
    boolean grouped = a.get("groups") != null || a.get("group-topk") != null;
    if (grouped) {
      for (String g : new String[] {"groups", "group-topk"}) {
        if (a.get(g) == null) throw new Args.UsageException("--groups and --group-topk go together (--" + g + " missing)");
        if (a.intValue(g, 0) < 1)
          throw new Args.UsageException("--" + g + " must be >= 1, got " + a.intValue(g, 0)
              + " (leave out --groups and --group-topk for no group limit)");
      }
    }
    for (String needsReplay : new String[] {"replay-mask", "minus-one-rows"})
      if (a.get(needsReplay) != null && a.get("replay") == null)
        throw new Args.UsageException("--" + needsReplay + " needs --replay");

    Npy.Array logitsArr = read(logitsPath);
    if (logitsArr.ndim() != 2)
      throw new TraceFormatException(logitsPath + ": logits must be 2-D [tokens, experts], got shape "
          + Arrays.toString(logitsArr.shape()));
    // Range checks before narrowing: a shape of (0, 2^32 + 128) must not become "128 experts".
    if (logitsArr.dim(1) < 1 || logitsArr.dim(1) > RouterConfig.MAX_EXPERTS)
      throw new TraceFormatException(logitsPath + ": logits shape " + Arrays.toString(logitsArr.shape())
          + ": experts (dimension 1) must be in [1, " + RouterConfig.MAX_EXPERTS + "], got " + logitsArr.dim(1));
    if (logitsArr.dim(0) > Integer.MAX_VALUE)
      throw new TraceFormatException(logitsPath + ": logits shape " + Arrays.toString(logitsArr.shape())
          + ": more than " + Integer.MAX_VALUE + " tokens");
    float[] logits = floats(logitsArr, logitsPath, "logits");
    int tokens = (int) logitsArr.dim(0);
    int experts = (int) logitsArr.dim(1);

    RouterConfig.Builder b = RouterConfig.builder(experts, a.intValue("topk", -1))
        .scoreFunction(score.equals("sigmoid") ? ScoreFunction.SIGMOID : ScoreFunction.SOFTMAX)
        .preSoftmax(a.flag("pre-softmax"))
        .scale(a.floatValue("scale", 1f));
    if (grouped) b.groups(a.intValue("groups", 0), a.intValue("group-topk", 0));
    if (a.get("bias") != null) {
      Path p = Paths.get(a.get("bias"));
      Npy.Array bias = read(p);
      if (bias.ndim() != 1 || bias.dim(0) != experts)
        throw new TraceFormatException(p + ": bias must have shape [" + experts + "], got " + Arrays.toString(bias.shape()));
      b.expertBias(floats(bias, p, "bias"));
    }
    RouterConfig config = b.build();
    int k = config.topK();

    int[] replay = null;
    byte[] mask = null;
    if (a.get("replay") != null) {
      if (a.get("replay-mask") != null) {
        Path m = Paths.get(a.get("replay-mask"));
        mask = mask(read(m), m, tokens);
      }
      Path p = Paths.get(a.get("replay"));
      replay = indices(read(p), p, tokens, k);
    }
    MinusOneRows minusOne = MinusOneRows.REJECT;
    if (a.get("minus-one-rows") != null) {
      try {
        minusOne = MinusOneRows.valueOf(a.get("minus-one-rows").toUpperCase(Locale.ROOT));
      } catch (IllegalArgumentException e) {
        throw new Args.UsageException("--minus-one-rows must be reject, live or arange, got '" + a.get("minus-one-rows") + "'");
      }
    }
    float[] gradWeights = null;
    if (a.get("grad-weights") != null) {
      Path p = Paths.get(a.get("grad-weights"));
      Npy.Array g = read(p);
      if (g.ndim() != 2 || g.dim(0) != tokens || g.dim(1) != k)
        throw new TraceFormatException(p + ": grad weights must have shape [" + tokens + ", " + k + "], got "
            + Arrays.toString(g.shape()));
      gradWeights = floats(g, p, "grad weights");
    }

    int[] idx = new int[tokens * k];
    float[] weights = new float[tokens * k];
    float[] gradLogits = gradWeights != null ? new float[tokens * experts] : null;
    long nonfinite;
    double ms;
    // Created before the clock starts: loading the native library is not routing time.
    try (MoeRouter router = MoeRouter.create(config, backend)) {
      long t0 = System.nanoTime();
      if (replay != null) {
        // One layer of a replay registry: its targets follow section 7's rules, -1 rows included.
        ReplayRegistry registry = ReplayRegistry.builder().minusOneRows(minusOne).build();
        RouterReplay layer = registry.addLayer(LayerKey.decoder(0), config);
        layer.setTargetIndices(replay, new long[] {tokens, k}, mask);
        layer.setAction(ReplayAction.REPLAY_FORWARD);
        nonfinite = layer.route(router, logits, tokens, idx, weights);
      } else {
        nonfinite = router.route(logits, tokens, idx, weights);
      }
      if (gradLogits != null) router.backward(logits, tokens, idx, gradWeights, gradLogits);
      ms = (System.nanoTime() - t0) / 1e6;
      backend = router.backend();
    }

    OutputSet outputs = new OutputSet(outDir, OUTPUTS);
    outputs.put("idx.npy", Npy.encode(new Npy.Array(Npy.Dtype.I4, new long[] {tokens, k}, idx)));
    outputs.put("weights.npy", Npy.encode(new Npy.Array(Npy.Dtype.F4, new long[] {tokens, k}, weights)));
    if (gradLogits != null)
      outputs.put("grad_logits.npy", Npy.encode(new Npy.Array(Npy.Dtype.F4, new long[] {tokens, experts}, gradLogits)));
    outputs.commit();
    out.printf(Locale.ROOT, "%s %d tokens x %d experts, top-%d on %s in %.2f ms; rows with non-finite logits: %d; wrote %s%n",
        replay != null ? (mask != null ? "replayed (masked)" : "replayed") : "routed", tokens, experts, k, backend, ms,
        nonfinite, outDir.resolve(gradLogits != null ? "{idx,weights,grad_logits}.npy" : "{idx,weights}.npy"));
    return 0;
  }

  /** Npy.read with the file named in every I/O error (reading a directory says only "Is a directory"). */
  static Npy.Array read(Path p) throws IOException {
    try {
      return Npy.read(p);
    } catch (FileSystemException e) {
      throw e;
    } catch (IOException e) {
      throw new IOException(p + ": cannot read: " + e.getMessage(), e);
    }
  }

  /** float32 as is; float64 converted. */
  static float[] floats(Npy.Array arr, Path p, String what) {
    switch (arr.dtype()) {
      case F4:
      case F8:
        return arr.toFloatArray();
      default:
        throw new TraceFormatException(p + ": " + what + " must be float32 or float64, got " + arr.dtype().descr());
    }
  }

  static int[] indices(Npy.Array arr, Path p, int tokens, int k) {
    if (arr.ndim() != 2 || arr.dim(0) != tokens || arr.dim(1) != k)
      throw new TraceFormatException(p + ": replay indices must have shape [" + tokens + ", " + k + "], got "
          + Arrays.toString(arr.shape()));
    switch (arr.dtype()) {
      case F4:
      case F8:
        throw new TraceFormatException(p + ": replay indices must be integers, got " + arr.dtype().descr());
      default:
        int[] out = new int[arr.size()];
        for (int i = 0; i < out.length; i++) {
          long v = arr.getLong(i);
          // Never narrow silently: a huge int64 must not turn into a plausible index (or into -1 padding).
          if (v < -1 || v > Integer.MAX_VALUE)
            throw new TraceFormatException(p + ": replay index " + v + " at row " + i / k + " position " + i % k
                + " is not an expert index (or -1 padding)");
          out[i] = (int) v;
        }
        return out;
    }
  }

  static byte[] mask(Npy.Array arr, Path p, int tokens) {
    if (arr.ndim() != 1 || arr.dim(0) != tokens)
      throw new TraceFormatException(p + ": replay mask must have shape [" + tokens + "], got "
          + Arrays.toString(arr.shape()));
    byte[] out = new byte[tokens];
    for (int i = 0; i < tokens; i++) out[i] = (byte) (arr.getDouble(i) != 0 ? 1 : 0);
    return out;
  }
}
