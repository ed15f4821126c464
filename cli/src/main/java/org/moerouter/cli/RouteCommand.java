// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.file.FileSystemException;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import org.moerouter.Backend;
import org.moerouter.DropPolicy;
import org.moerouter.GroupScore;
import org.moerouter.LossConfig;
import org.moerouter.LossValues;
import org.moerouter.MinusOneRows;
import org.moerouter.MoeRouter;
import org.moerouter.NonFinitePolicy;
import org.moerouter.RouterConfig;
import org.moerouter.ScoreFunction;
import org.moerouter.SeqLayout;
import org.moerouter.TokenDropping;
import org.moerouter.replay.LayerKey;
import org.moerouter.replay.ReplayRegistry;
import org.moerouter.replay.RouterReplay;
import org.moerouter.trace.Npy;
import org.moerouter.trace.TraceFormatException;

/**
 * {@code moe-router route}: routes (or replays) a logits .npy file with every routing option of docs/semantics.md
 * sections 1-6 and writes the results (indices, weights, gradient, counts, losses, token dropping) as .npy files.
 */
final class RouteCommand {
  private RouteCommand() {}

  static final String USAGE = "route --logits L.npy --score softmax|sigmoid|sqrtsoftplus --topk K [--pre-softmax]"
      + " [--bias B.npy] [--normalize on|off] [--groups G --group-topk GK [--group-score topk_sum|top2_sum|max]]"
      + " [--scale S] [--nonfinite propagate|zero|error]"
      + " [--replay IDX.npy [--replay-mask M.npy] [--minus-one-rows reject|live|arange]] [--grad-weights DW.npy]"
      + " [--padding-mask P.npy] [--aux-loss C] [--seq-aux-loss C --seq-length SQ [--seq-layout sb|bs]]"
      + " [--global-aux-loss C --global-tokens G.npy --global-num-tokens NG] [--z-loss C]"
      + " [--capacity-factor CF [--drop-policy probs|position] [--pad-to-capacity]] [--bias-update-rate R]"
      + " [--backend java|cpu|cuda|native|auto] --out DIR";

  static final String HELP = String.join("\n",
      "usage: moe-router " + USAGE,
      "Routes (or replays) the logits [tokens, experts] of a .npy file (docs/semantics.md sections 1-6) and writes into",
      "DIR: idx.npy [tokens, k] int32, weights.npy [tokens, k] float32 and tokens_per_expert.npy [experts] int32 (of",
      "the final routing map, after dropping), plus the outputs of the options below. The files are replaced as a set:",
      "a failed run leaves the previous set, a run that does not produce a file removes an old one.",
      "Routing (sections 1-5):",
      "  --logits L.npy        float32 or float64 [tokens, experts]",
      "  --score FN            softmax, sigmoid or sqrtsoftplus (DeepSeek-V4: sqrt(softplus(L)))",
      "  --topk K              experts per token",
      "  --pre-softmax         softmax only: rank and weight by the softmax over all experts",
      "  --bias B.npy          expert bias [experts] added for selection only (sigmoid, sqrtsoftplus, or softmax",
      "                        with --pre-softmax)",
      "  --normalize on|off    renormalise the k weights (default: on for sigmoid and sqrtsoftplus, off for softmax",
      "                        pre; softmax post is normalised by construction); off = vLLM/SGLang renormalize=False",
      "  --groups G --group-topk GK   group-limited routing: keep the best GK of G expert groups (both >= 1)",
      "  --group-score R       topk_sum (default; Megatron), top2_sum (DeepSeek-V3 with a bias) or max (DeepSeek-V2)",
      "  --scale S             multiplies the weights (default 1)",
      "  --nonfinite P         rows reading NaN/inf: propagate (default), zero (weights and gradient 0, padding for",
      "                        counts and losses; writes nonfinite_rows.npy [tokens] uint8) or error (reject the run)",
      "  --replay IDX.npy      integer [tokens, k]: use these experts instead of selecting (-1 rows: see below)",
      "  --replay-mask M.npy   [tokens]: rows with 0 are routed live (needs --replay)",
      "  --minus-one-rows P    rows of -1 (slime/miles padding): reject (default), live (route them live) or",
      "                        arange (experts 0..k-1) (needs --replay)",
      "  --grad-weights DW.npy float [tokens, k]: writes grad_logits.npy [tokens, experts], the backward of the",
      "                        weights (through the kept entries only with --capacity-factor)",
      "Training (section 6):",
      "  --padding-mask P.npy  [tokens], nonzero = padding (Megatron): excluded from the losses and the valid counts",
      "                        (writes valid_tokens_per_expert.npy); padding changes no index, weight or drop",
      "  --aux-loss C          switch load-balancing loss coefficient (Megatron aux_loss)",
      "  --seq-aux-loss C      sequence aux loss (DeepSeek seq_aux_loss) over tokens = SQ * batch rows:",
      "  --seq-length SQ       the sequence length, and --seq-layout sb (default, Megatron [seq, batch]) or bs",
      "  --global-aux-loss C   global aux loss (Megatron global_aux_loss) from --global-tokens G.npy ([experts], the",
      "                        averaged global aux-map counts) and --global-num-tokens NG (this micro-batch's total)",
      "  --z-loss C            router z-loss coefficient",
      "                        With a loss: aux_tokens_per_expert.npy, one 0-d float64 .npy per loss (aux_loss,",
      "                        seq_aux_loss, global_aux_loss, z_loss) and loss_grad_logits.npy, the gradient of their sum",
      "  --capacity-factor CF  token dropping (capacity ceil(tokens * k / experts * CF)): writes routing_map.npy and",
      "                        routing_probs.npy [tokens, experts] (final), kept.npy [tokens, k], kept_counts.npy",
      "  --drop-policy P       probs (default: keep the largest weights) or position (the first tokens)",
      "  --pad-to-capacity     every expert gets exactly capacity rows (padding slots have prob 0)",
      "  --bias-update-rate R  writes updated_bias.npy: bias + R * sign(mean - valid tokens per expert)",
      "  --backend B           java, cpu, cuda, native (cpu or cuda) or auto (default)",
      "  --out DIR             output folder (created if missing)");

  static final String[] OUTPUTS = {"idx.npy", "weights.npy", "grad_logits.npy", "nonfinite_rows.npy",
      "tokens_per_expert.npy", "valid_tokens_per_expert.npy", "aux_tokens_per_expert.npy", "aux_loss.npy",
      "seq_aux_loss.npy", "global_aux_loss.npy", "z_loss.npy", "loss_grad_logits.npy", "routing_map.npy",
      "routing_probs.npy", "kept.npy", "kept_counts.npy", "updated_bias.npy"};

  /**
   * What the reported time depends on: the clock, and the two costly steps it must leave out (creating the
   * router, which loads the native library on first use, and encoding the outputs). Tests substitute a
   * virtual clock that these steps advance, so they check what the time covers without timing anything.
   */
  interface Env {
    long nanoTime();

    MoeRouter createRouter(RouterConfig config, Backend backend);

    ByteBuffer encode(Npy.Array array);
  }

  static final Env SYSTEM = new Env() {
    @Override
    public long nanoTime() {
      return System.nanoTime();
    }

    @Override
    public MoeRouter createRouter(RouterConfig config, Backend backend) {
      return MoeRouter.create(config, backend);
    }

    @Override
    public ByteBuffer encode(Npy.Array array) {
      return Npy.encode(array);
    }
  };

  static int run(String[] argv, PrintStream out) throws IOException {
    return run(argv, out, SYSTEM);
  }

  static int run(String[] argv, PrintStream out, Env env) throws IOException {
    Args a = Args.command(argv,
        Set.of("logits", "bias", "score", "topk", "groups", "group-topk", "group-score", "scale", "normalize",
            "nonfinite", "replay", "replay-mask", "minus-one-rows", "grad-weights", "padding-mask", "aux-loss",
            "seq-aux-loss", "seq-length", "seq-layout", "global-aux-loss", "global-tokens", "global-num-tokens", "z-loss",
            "capacity-factor", "drop-policy", "bias-update-rate", "backend", "out"),
        Set.of("pre-softmax", "pad-to-capacity"), HELP, out);
    if (a == null) return 0;
    Path logitsPath = Paths.get(a.require("logits"));
    Path outDir = Paths.get(a.require("out"));
    Backend backend = Main.backend(a.get("backend"));
    ScoreFunction score = choice(a, "score", ScoreFunction.class, null);
    if (score == null) throw new Args.UsageException("missing required option --score");
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
    needs(a, "group-score", "groups");
    needs(a, "replay-mask", "replay");
    needs(a, "minus-one-rows", "replay");
    needs(a, "seq-length", "seq-aux-loss");
    needs(a, "seq-layout", "seq-aux-loss");
    needs(a, "seq-aux-loss", "seq-length");
    needs(a, "global-tokens", "global-aux-loss");
    needs(a, "global-num-tokens", "global-aux-loss");
    needs(a, "global-aux-loss", "global-tokens");
    needs(a, "global-aux-loss", "global-num-tokens");
    needs(a, "drop-policy", "capacity-factor");
    if (a.flag("pad-to-capacity") && a.get("capacity-factor") == null)
      throw new Args.UsageException("--pad-to-capacity needs --capacity-factor");
    String normalize = a.get("normalize");
    if (normalize != null && !normalize.equals("on") && !normalize.equals("off"))
      throw new Args.UsageException("--normalize must be on or off, got '" + normalize + "'");
    GroupScore groupScore = choice(a, "group-score", GroupScore.class, GroupScore.TOPK_SUM);
    NonFinitePolicy nonFinite = choice(a, "nonfinite", NonFinitePolicy.class, NonFinitePolicy.PROPAGATE);
    MinusOneRows minusOne = choice(a, "minus-one-rows", MinusOneRows.class, MinusOneRows.REJECT);
    SeqLayout seqLayout = choice(a, "seq-layout", SeqLayout.class, SeqLayout.SB);
    DropPolicy dropPolicy = choice(a, "drop-policy", DropPolicy.class, DropPolicy.PROBS);

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

    RouterConfig.Builder b = RouterConfig.builder(experts, a.intValue("topk", -1)).scoreFunction(score)
        .preSoftmax(a.flag("pre-softmax")).scale(a.floatValue("scale", 1f)).groupScore(groupScore).nonFinite(nonFinite)
        .minusOneRows(minusOne);
    if (normalize != null) b.normalize(normalize.equals("on"));
    if (grouped) b.groups(a.intValue("groups", 0), a.intValue("group-topk", 0));
    if (a.get("bias") != null) b.expertBias(vector(Paths.get(a.get("bias")), experts, "bias"));
    RouterConfig config = b.build();
    int k = config.topK();
    // Option values are checked (with the library's own rules and texts) before any output is computed.
    LossConfig losses = LossConfig.builder().auxLoss(a.floatValue("aux-loss", 0f))
        .seqAuxLoss(a.floatValue("seq-aux-loss", 0f), a.intValue("seq-length", 0), seqLayout)
        .globalAuxLoss(a.floatValue("global-aux-loss", 0f)).zLoss(a.floatValue("z-loss", 0f)).build();
    boolean anyLoss = losses.auxCoeff() > 0 || losses.seqAuxCoeff() > 0 || losses.globalAuxCoeff() > 0
        || losses.zCoeff() > 0;
    TokenDropping dropping = a.get("capacity-factor") == null ? null
        : TokenDropping.of(a.doubleValue("capacity-factor", 0), dropPolicy, a.flag("pad-to-capacity"));
    float biasRate = a.floatValue("bias-update-rate", Float.NaN);
    if (a.get("bias-update-rate") != null && !Float.isFinite(biasRate))
      throw new Args.UsageException("--bias-update-rate must be a finite number, got '" + a.get("bias-update-rate") + "'");

    int[] replay = null;
    byte[] mask = null;
    if (a.get("replay") != null) {
      if (a.get("replay-mask") != null) {
        Path m = Paths.get(a.get("replay-mask"));
        mask = mask(read(m), m, tokens, "replay mask");
      }
      Path p = Paths.get(a.get("replay"));
      replay = indices(read(p), p, tokens, k);
    }
    float[] gradWeights = a.get("grad-weights") == null ? null : matrix(Paths.get(a.get("grad-weights")), tokens, k,
        "grad weights");
    byte[] padding = null;
    if (a.get("padding-mask") != null) {
      Path p = Paths.get(a.get("padding-mask"));
      padding = mask(read(p), p, tokens, "padding mask");
    }
    double[] globalTokens = null;
    double globalNumTokens = 0;
    if (losses.globalAuxCoeff() > 0) {
      globalTokens = doubles(Paths.get(a.get("global-tokens")), experts, "global tokens per expert");
      globalNumTokens = a.doubleValue("global-num-tokens", 0);
    }

    OutputSet outputs = new OutputSet(outDir, OUTPUTS);
    // Encoded after the clock stops: the reported time is the library's calls only.
    Map<String, Npy.Array> results = new LinkedHashMap<>();
    List<String> summary = new ArrayList<>();
    long nonfinite;
    double ms;
    // Created before the clock starts: loading the native library is not routing time.
    try (MoeRouter router = env.createRouter(config, backend)) {
      int[] idx = new int[tokens * k];
      float[] weights = new float[tokens * k];
      byte[] rows = nonFinite == NonFinitePolicy.ZERO ? new byte[tokens] : null;
      long t0 = env.nanoTime();
      if (replay != null) {
        // The targets are checked by one layer of a replay registry (section 7's rules and texts, -1 rows
        // included); the router replays them with the same minus-one-rows policy.
        ReplayRegistry registry = ReplayRegistry.builder().minusOneRows(minusOne).build();
        RouterReplay layer = registry.addLayer(LayerKey.decoder(0), config);
        layer.setTargetIndices(replay, new long[] {tokens, k}, mask);
        nonfinite = router.replay(logits, tokens, replay, mask, idx, weights, rows);
      } else {
        nonfinite = router.route(logits, tokens, idx, weights, rows);
      }
      byte[] kept = null;
      byte[] finalMap = null;
      if (dropping != null) {
        finalMap = new byte[tokens * experts];
        float[] probs = new float[tokens * experts];
        kept = new byte[tokens * k];
        int[] keptCounts = new int[experts];
        long dropped = router.dropTokens(dropping, idx, weights, tokens, finalMap, probs, kept, keptCounts);
        results.put("routing_map.npy", new Npy.Array(Npy.Dtype.U1, new long[] {tokens, experts}, finalMap));
        results.put("routing_probs.npy", new Npy.Array(Npy.Dtype.F4, new long[] {tokens, experts}, probs));
        results.put("kept.npy", new Npy.Array(Npy.Dtype.U1, new long[] {tokens, k}, kept));
        results.put("kept_counts.npy", new Npy.Array(Npy.Dtype.I4, new long[] {experts}, keptCounts));
        summary.add(String.format(Locale.ROOT, "capacity %d, %d of %d entries dropped",
            dropping.capacity(tokens, k, experts), dropped, (long) tokens * k));
      }
      if (gradWeights != null) {
        float[] dw = gradWeights;
        if (kept != null) TokenDropping.maskDropped(tokens, k, gradWeights, kept, dw = new float[tokens * k]);
        float[] gradLogits = new float[tokens * experts];
        router.backward(logits, tokens, idx, dw, rows, gradLogits);
        results.put("grad_logits.npy", new Npy.Array(Npy.Dtype.F4, new long[] {tokens, experts}, gradLogits));
      }
      byte[] valid = new byte[tokens];
      long n = router.validTokens(logits, tokens, padding, valid);
      int[] counts = new int[experts];
      int[] validCounts = new int[experts];
      if (finalMap != null) {
        router.tokensPerExpert(finalMap, tokens, null, counts);
        router.tokensPerExpert(finalMap, tokens, valid, validCounts);
      } else {
        router.tokensPerExpert(idx, tokens, null, counts);
        router.tokensPerExpert(idx, tokens, valid, validCounts);
      }
      results.put("tokens_per_expert.npy", new Npy.Array(Npy.Dtype.I4, new long[] {experts}, counts));
      if (padding != null || nonFinite == NonFinitePolicy.ZERO) {
        results.put("valid_tokens_per_expert.npy", new Npy.Array(Npy.Dtype.I4, new long[] {experts}, validCounts));
        summary.add(n + " valid tokens");
      }
      if (anyLoss) {
        float[] lossGrad = new float[tokens * experts];
        LossValues v = router.losses(logits, tokens, valid, losses, globalTokens, globalNumTokens, lossGrad,
            new LossValues(experts));
        results.put("aux_tokens_per_expert.npy",
            new Npy.Array(Npy.Dtype.I4, new long[] {experts}, v.auxTokensPerExpert()));
        scalar(results, summary, "aux_loss", losses.auxCoeff(), v.auxLoss());
        scalar(results, summary, "seq_aux_loss", losses.seqAuxCoeff(), v.seqAuxLoss());
        scalar(results, summary, "global_aux_loss", losses.globalAuxCoeff(), v.globalAuxLoss());
        scalar(results, summary, "z_loss", losses.zCoeff(), v.zLoss());
        results.put("loss_grad_logits.npy", new Npy.Array(Npy.Dtype.F4, new long[] {tokens, experts}, lossGrad));
      }
      if (a.get("bias-update-rate") != null) {
        float[] next = router.updateExpertBias(validCounts, biasRate);
        results.put("updated_bias.npy", new Npy.Array(Npy.Dtype.F4, new long[] {experts}, next));
      }
      ms = (env.nanoTime() - t0) / 1e6;
      if (rows != null) results.put("nonfinite_rows.npy", new Npy.Array(Npy.Dtype.U1, new long[] {tokens}, rows));
      results.put("idx.npy", new Npy.Array(Npy.Dtype.I4, new long[] {tokens, k}, idx));
      results.put("weights.npy", new Npy.Array(Npy.Dtype.F4, new long[] {tokens, k}, weights));
      results.forEach((name, array) -> outputs.put(name, env.encode(array)));
      backend = router.backend();
    }
    outputs.commit();
    out.printf(Locale.ROOT, "%s %d tokens x %d experts, top-%d on %s in %.2f ms; rows with non-finite logits: %d%s;"
        + " wrote %s%n", replay != null ? (mask != null ? "replayed (masked)" : "replayed") : "routed", tokens, experts,
        k, backend, ms, nonfinite, summary.isEmpty() ? "" : "; " + String.join("; ", summary), outDir);
    return 0;
  }

  private static void scalar(Map<String, Npy.Array> results, List<String> summary, String name, float coeff,
      double value) {
    if (coeff == 0f) return;
    results.put(name + ".npy", new Npy.Array(Npy.Dtype.F8, new long[0], new double[] {value}));
    summary.add(String.format(Locale.ROOT, "%s %.6g", name, value));
  }

  /** An option that only means something with another one: a usage error without it. */
  private static void needs(Args a, String option, String other) {
    if (a.get(option) != null && a.get(other) == null)
      throw new Args.UsageException("--" + option + " needs --" + other);
  }

  /** An enum option by its lower-case name (topk_sum, sb, probs, ...); {@code dflt} when absent. */
  static <E extends Enum<E>> E choice(Args a, String option, Class<E> type, E dflt) {
    String v = a.get(option);
    if (v == null) return dflt;
    for (E e : type.getEnumConstants()) if (e.name().equalsIgnoreCase(v)) return e;
    List<String> names = new ArrayList<>();
    for (E e : type.getEnumConstants()) names.add(e.name().toLowerCase(Locale.ROOT));
    throw new Args.UsageException("--" + option + " must be " + String.join(", ", names.subList(0, names.size() - 1))
        + " or " + names.get(names.size() - 1) + ", got '" + v + "'");
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

  /** A float [n] vector file. */
  static float[] vector(Path p, int n, String what) throws IOException {
    Npy.Array arr = read(p);
    if (arr.ndim() != 1 || arr.dim(0) != n)
      throw new TraceFormatException(p + ": " + what + " must have shape [" + n + "], got " + Arrays.toString(arr.shape()));
    return floats(arr, p, what);
  }

  /** A float64 (or float32) [n] vector file, read exactly. */
  static double[] doubles(Path p, int n, String what) throws IOException {
    Npy.Array arr = read(p);
    if (arr.ndim() != 1 || arr.dim(0) != n)
      throw new TraceFormatException(p + ": " + what + " must have shape [" + n + "], got " + Arrays.toString(arr.shape()));
    floats(arr, p, what);  // the dtype rule
    double[] out = new double[n];
    for (int i = 0; i < n; i++) out[i] = arr.getDouble(i);
    return out;
  }

  /** A float [rows, cols] matrix file. */
  static float[] matrix(Path p, int rows, int cols, String what) throws IOException {
    Npy.Array g = read(p);
    if (g.ndim() != 2 || g.dim(0) != rows || g.dim(1) != cols)
      throw new TraceFormatException(p + ": " + what + " must have shape [" + rows + ", " + cols + "], got "
          + Arrays.toString(g.shape()));
    return floats(g, p, what);
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

  /** A [tokens] mask of any numeric dtype (bool included): nonzero becomes 1. */
  static byte[] mask(Npy.Array arr, Path p, int tokens, String what) {
    if (arr.ndim() != 1 || arr.dim(0) != tokens)
      throw new TraceFormatException(p + ": " + what + " must have shape [" + tokens + "], got "
          + Arrays.toString(arr.shape()));
    byte[] out = new byte[tokens];
    for (int i = 0; i < tokens; i++) out[i] = (byte) (arr.getDouble(i) != 0 ? 1 : 0);
    return out;
  }
}
