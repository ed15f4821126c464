// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import org.moerouter.Backend;
import org.moerouter.DropPolicy;
import org.moerouter.GroupScore;
import org.moerouter.LogitsType;
import org.moerouter.LossConfig;
import org.moerouter.LossValues;
import org.moerouter.MoeRouter;
import org.moerouter.MoeRouterException;
import org.moerouter.NonFinitePolicy;
import org.moerouter.RouterConfig;
import org.moerouter.ScoreFunction;
import org.moerouter.SeqLayout;
import org.moerouter.Status;
import org.moerouter.TokenDropping;
import org.moerouter.trace.Npy;
import org.moerouter.trace.TraceFormatException;

/**
 * {@code moe-router case}: runs one reference case of the goldens_v2 format (docs/semantics.md sections 1-7:
 * config.json and .npy inputs) through the library and writes every expected output the format lists for
 * that config, under the same names and dtypes, so that a backend can be compared with a reference by file.
 */
final class CaseCommand {
  private CaseCommand() {}

  static final String USAGE = "case --case DIR [--backend java|cpu|cuda|native|auto] --out OUT";

  static final String HELP = String.join("\n",
      "usage: moe-router " + USAGE,
      "Runs one reference case in the goldens_v2 format (its README.md) through the library: reads DIR/config.json",
      "(every option by name) and the inputs it names (logits, bias, replay_idx, grad_weights, padding_mask,",
      "global_tokens_per_expert, global_num_tokens), and writes into OUT every expected output the format lists",
      "for that config, with the format's names and dtypes: live_idx (int32), live_weights, replay_weights,",
      "live_grad_logits, replay_grad_logits, tokens_per_expert (int32, after dropping), *_nonfinite_rows (uint8,",
      "ZERO), valid_tokens_per_expert (int32, padding or ZERO), updated_bias, aux_tokens_per_expert and each",
      "loss with its gradient (0-d float64 losses), {live,replay}_drop_* (maps and kept entries uint8, counts",
      "int32). Floats the library computes in float32 are written as float32.",
      "A call the config rejects (non-finite ERROR, invalid replay rows) writes live_error.txt / replay_error.txt",
      "with its one-line error instead of its outputs, and the command still exits 0; it exits 1 only when the",
      "case cannot run (no such directory, a bad config.json, a missing or misshapen input), 2 on a usage error.",
      "The files are replaced as a set: outputs of an earlier case in OUT that this one does not write are removed.",
      "  --case DIR      the case folder",
      "  --backend B     java, cpu, cuda, native (cpu or cuda) or auto (default)",
      "  --out OUT       output folder (created if missing)");

  /** Every file the command can write, so that a stale member of an earlier run in OUT is removed. */
  static final String[] OUTPUTS = {"live_idx.npy", "live_weights.npy", "replay_weights.npy", "live_grad_logits.npy",
      "replay_grad_logits.npy", "tokens_per_expert.npy", "live_nonfinite_rows.npy", "replay_nonfinite_rows.npy",
      "valid_tokens_per_expert.npy", "updated_bias.npy", "aux_tokens_per_expert.npy", "aux_loss.npy",
      "aux_grad_logits.npy", "seq_aux_loss.npy", "seq_aux_grad_logits.npy", "global_aux_loss.npy",
      "global_aux_grad_logits.npy", "z_loss.npy", "z_grad_logits.npy", "live_drop_routing_map.npy",
      "live_drop_routing_probs.npy", "live_drop_kept.npy", "live_drop_kept_counts.npy", "live_drop_grad_logits.npy",
      "replay_drop_routing_map.npy", "replay_drop_routing_probs.npy", "replay_drop_kept.npy",
      "replay_drop_kept_counts.npy", "replay_drop_grad_logits.npy", "live_error.txt", "replay_error.txt"};

  static int run(String[] argv, PrintStream out) throws IOException {
    Args a = Args.command(argv, Set.of("case", "backend", "out"), Set.of(), HELP, out);
    if (a == null) return 0;
    Path dir = Paths.get(a.require("case"));
    Path outDir = Paths.get(a.require("out"));
    Backend backend = Main.backend(a.get("backend"));
    if (!Files.isDirectory(dir)) throw new NoSuchFileException(dir + " (not a case folder)");
    Case c = new Case(dir);
    OutputSet outputs = new OutputSet(outDir, OUTPUTS);
    List<String> notes = new ArrayList<>();
    try (MoeRouter router = MoeRouter.create(c.config, backend)) {
      c.run(router, outputs, notes);
      backend = router.backend();
    }
    outputs.commit();
    out.printf(Locale.ROOT, "case %s on %s: wrote %d files to %s%s%n", dir.getFileName(), backend, outputs.size(),
        outDir, notes.isEmpty() ? "" : " (" + String.join("; ", notes) + ")");
    return 0;
  }

  /** One case: its config and inputs, checked before anything runs. */
  static final class Case {
    final Path dir;
    final JsonNode json;
    final RouterConfig config;
    final int tokens, experts, k;
    final LogitsType type;
    final float[] logits;
    final short[] half;  // bf16 cases: the logits as bf16 bits (the case holds bf16 values)
    final int[] replayIdx;
    final float[] gradWeights;
    final byte[] padding;
    final double[] globalTokens;
    final double globalNumTokens;
    final LossConfig[] losses;  // one per loss the config sets, in the order of LOSSES
    final TokenDropping dropping;
    final float biasRate;  // NaN: no bias update

    static final String[] LOSSES = {"aux", "seq_aux", "global_aux", "z"};

    Case(Path dir) throws IOException {
      this.dir = dir;
      Path cfg = dir.resolve("config.json");
      try {
        json = new ObjectMapper().readTree(Files.readAllBytes(cfg));
      } catch (JsonProcessingException e) {
        throw new TraceFormatException(cfg + ": not JSON: " + e.getOriginalMessage());
      }
      if (json == null || !json.isObject()) throw new TraceFormatException(cfg + ": not a JSON object");
      tokens = integer("T", 0);
      experts = integer("E", 1);
      k = integer("topk", 1);
      String dtype = text("dtype", "fp32", "fp32", "bf16");
      RouterConfig.Builder b = RouterConfig.builder(experts, k)
          .scoreFunction(ScoreFunction.valueOf(text("score", null, "softmax", "sigmoid", "sqrtsoftplus").toUpperCase(Locale.ROOT)))
          .preSoftmax(bool("pre_softmax"));
      if (bool("bias")) b.expertBias(RouteCommand.vector(dir.resolve("bias.npy"), experts, "bias"));
      if (present("groups") || present("group_topk")) b.groups(integer("groups", 1), integer("group_topk", 1));
      if (present("group_score")) b.groupScore(GroupScore.valueOf(text("group_score", null, "TOPK_SUM", "TOP2_SUM", "MAX")));
      if (present("scale")) b.scale((float) number("scale"));
      if (present("normalize")) b.normalize(bool("normalize"));
      b.nonFinite(NonFinitePolicy.valueOf(text("nonfinite", "PROPAGATE", "PROPAGATE", "ZERO", "ERROR")));
      config = b.build();

      Path lp = dir.resolve("logits.npy");
      logits = RouteCommand.matrix(lp, tokens, experts, "logits");
      type = dtype.equals("bf16") ? LogitsType.BF16 : LogitsType.FP32;
      half = type == LogitsType.BF16 ? bf16(logits, lp) : null;
      Path rp = dir.resolve("replay_idx.npy");
      replayIdx = RouteCommand.indices(RouteCommand.read(rp), rp, tokens, k);
      gradWeights = RouteCommand.matrix(dir.resolve("grad_weights.npy"), tokens, k, "grad weights");
      if (bool("padding_mask")) {
        Path p = dir.resolve("padding_mask.npy");
        padding = RouteCommand.mask(RouteCommand.read(p), p, tokens, "padding mask");
      } else {
        padding = null;
      }

      List<LossConfig> each = new ArrayList<>();
      for (String loss : LOSSES) {
        String key = loss + "_loss_coeff";
        if (!present(key)) continue;
        float coeff = (float) number(key);
        LossConfig.Builder lb = LossConfig.builder();
        switch (loss) {
          case "aux": lb.auxLoss(coeff); break;
          case "seq_aux": {
            int seq = integer("seq_length", 1);
            if (present("batch") && (long) seq * integer("batch", 1) != tokens)
              throw new TraceFormatException(cfg + ": seq_length (" + seq + ") * batch (" + integer("batch", 1)
                  + ") is not T (" + tokens + ")");
            lb.seqAuxLoss(coeff, seq, SeqLayout.valueOf(text("seq_layout", "SB", "SB", "BS")));
            break;
          }
          case "global_aux": lb.globalAuxLoss(coeff); break;
          default: lb.zLoss(coeff);
        }
        each.add(lb.build());
      }
      losses = each.toArray(new LossConfig[0]);
      if (present("global_aux_loss_coeff")) {
        globalTokens = RouteCommand.doubles(dir.resolve("global_tokens_per_expert.npy"), experts, "global tokens per expert");
        Path ng = dir.resolve("global_num_tokens.npy");
        Npy.Array n = RouteCommand.read(ng);
        if (n.size() != 1) throw new TraceFormatException(ng + ": global num tokens must be a scalar, got shape "
            + Arrays.toString(n.shape()));
        globalNumTokens = n.getDouble(0);
      } else {
        globalTokens = null;
        globalNumTokens = 0;
      }
      dropping = present("capacity_factor") ? TokenDropping.of(number("capacity_factor"),
          DropPolicy.valueOf(text("drop_policy", "probs", "probs", "position").toUpperCase(Locale.ROOT)),
          bool("pad_to_capacity")) : null;
      biasRate = present("bias_update_rate") ? (float) number("bias_update_rate") : Float.NaN;
    }

    /** Runs live routing, replay, their backward, counts, losses, dropping and the bias update into outputs. */
    void run(MoeRouter r, OutputSet outputs, List<String> notes) {
      final boolean zero = config.nonFinite() == NonFinitePolicy.ZERO;
      final long[] tk = {tokens, k}, te = {tokens, experts}, e = {experts};
      // Row flags only where they matter (ZERO's backward): CUDA routers do not write them yet.
      int[] liveIdx = new int[tokens * k];
      float[] liveW = new float[tokens * k];
      byte[] liveRows = zero ? new byte[tokens] : null;
      boolean live = forward(r, null, liveIdx, liveW, liveRows, "live", outputs, notes);
      int[] replayOut = new int[tokens * k];
      float[] replayW = new float[tokens * k];
      byte[] replayRows = zero ? new byte[tokens] : null;
      boolean replay = forward(r, replayIdx, replayOut, replayW, replayRows, "replay", outputs, notes);
      if (live) {
        put(outputs, "live_idx.npy", Npy.Dtype.I4, tk, liveIdx);
        put(outputs, "live_weights.npy", Npy.Dtype.F4, tk, liveW);
        put(outputs, "live_grad_logits.npy", Npy.Dtype.F4, te, backward(r, liveIdx, liveRows, gradWeights));
        if (zero) put(outputs, "live_nonfinite_rows.npy", Npy.Dtype.U1, new long[] {tokens}, liveRows);
      }
      if (replay) {
        put(outputs, "replay_weights.npy", Npy.Dtype.F4, tk, replayW);
        put(outputs, "replay_grad_logits.npy", Npy.Dtype.F4, te, backward(r, replayOut, replayRows, gradWeights));
        if (zero) put(outputs, "replay_nonfinite_rows.npy", Npy.Dtype.U1, new long[] {tokens}, replayRows);
      }
      byte[] liveMap = null;
      if (dropping != null) {
        if (live) liveMap = drop(r, "live", liveIdx, liveW, liveRows, outputs);
        if (replay) drop(r, "replay", replayOut, replayW, replayRows, outputs);
        notes.add("capacity " + dropping.capacity(tokens, k, experts));
      }
      if (!live) return;  // counts, losses and the bias update belong to the live routing
      byte[] valid = new byte[tokens];
      long n = half != null ? r.validTokens(half, type, tokens, padding, valid) : r.validTokens(logits, tokens, padding, valid);
      int[] counts = new int[experts], validCounts = new int[experts];
      if (liveMap != null) {
        r.tokensPerExpert(liveMap, tokens, null, counts);
        r.tokensPerExpert(liveMap, tokens, valid, validCounts);
      } else {
        r.tokensPerExpert(liveIdx, tokens, null, counts);
        r.tokensPerExpert(liveIdx, tokens, valid, validCounts);
      }
      put(outputs, "tokens_per_expert.npy", Npy.Dtype.I4, e, counts);
      if (padding != null || zero) {
        put(outputs, "valid_tokens_per_expert.npy", Npy.Dtype.I4, e, validCounts);
        notes.add(n + " valid tokens");
      }
      for (int i = 0; i < losses.length; i++) {
        LossConfig lc = losses[i];
        float[] grad = new float[tokens * experts];
        LossValues v = new LossValues(experts);
        if (half != null) r.losses(half, type, tokens, valid, lc, globalTokens, globalNumTokens, grad, v);
        else r.losses(logits, tokens, valid, lc, globalTokens, globalNumTokens, grad, v);
        String name = lc.auxCoeff() > 0 ? "aux" : lc.seqAuxCoeff() > 0 ? "seq_aux" : lc.globalAuxCoeff() > 0
            ? "global_aux" : lc.zCoeff() > 0 ? "z" : null;
        if (i == 0) put(outputs, "aux_tokens_per_expert.npy", Npy.Dtype.I4, e, v.auxTokensPerExpert());
        if (name == null) continue;  // a coefficient of 0: the loss is off, the format lists no file for it
        put(outputs, name + "_loss.npy", Npy.Dtype.F8, new long[0], new double[] {v.total()});
        put(outputs, name + "_grad_logits.npy", Npy.Dtype.F4, te, grad);
      }
      if (!Float.isNaN(biasRate)) put(outputs, "updated_bias.npy", Npy.Dtype.F4, e, r.updateExpertBias(validCounts, biasRate));
    }

    /** Live routing (replay == null) or replay; a rejected call writes its error file and returns false. */
    private boolean forward(MoeRouter r, int[] replay, int[] idx, float[] w, byte[] rows, String what,
        OutputSet outputs, List<String> notes) {
      try {
        if (half != null) {
          if (replay == null) r.route(half, type, tokens, idx, w, rows);
          else r.replay(half, type, tokens, replay, null, idx, w, rows);
        } else {
          if (replay == null) r.route(logits, tokens, idx, w, rows);
          else r.replay(logits, tokens, replay, null, idx, w, rows);
        }
        return true;
      } catch (MoeRouterException ex) {
        if (ex.status() != Status.NONFINITE && ex.status() != Status.INVALID_REPLAY) throw ex;
        outputs.put(what + "_error.txt", ByteBuffer.wrap((ex.getMessage() + "\n").getBytes(StandardCharsets.UTF_8)));
        notes.add(what + " rejected");
        return false;
      }
    }

    private float[] backward(MoeRouter r, int[] idx, byte[] rows, float[] dw) {
      float[] grad = new float[tokens * experts];
      if (half != null) r.backward(half, type, tokens, idx, dw, rows, grad);
      else r.backward(logits, tokens, idx, dw, rows, grad);
      return grad;
    }

    /** Token dropping of one selection: its outputs, and the final map (for the counts). */
    private byte[] drop(MoeRouter r, String prefix, int[] idx, float[] w, byte[] rows, OutputSet outputs) {
      byte[] map = new byte[tokens * experts], kept = new byte[tokens * k];
      float[] probs = new float[tokens * experts];
      int[] keptCounts = new int[experts];
      r.dropTokens(dropping, idx, w, tokens, map, probs, kept, keptCounts);
      float[] dw = new float[tokens * k];
      TokenDropping.maskDropped(tokens, k, gradWeights, kept, dw);
      put(outputs, prefix + "_drop_routing_map.npy", Npy.Dtype.U1, new long[] {tokens, experts}, map);
      put(outputs, prefix + "_drop_routing_probs.npy", Npy.Dtype.F4, new long[] {tokens, experts}, probs);
      put(outputs, prefix + "_drop_kept.npy", Npy.Dtype.U1, new long[] {tokens, k}, kept);
      put(outputs, prefix + "_drop_kept_counts.npy", Npy.Dtype.I4, new long[] {experts}, keptCounts);
      put(outputs, prefix + "_drop_grad_logits.npy", Npy.Dtype.F4, new long[] {tokens, experts}, backward(r, idx, rows, dw));
      return map;
    }

    private static void put(OutputSet outputs, String name, Npy.Dtype dtype, long[] shape, Object data) {
      outputs.put(name, Npy.encode(new Npy.Array(dtype, shape, data)));
    }

    private boolean present(String key) {
      return json.has(key) && !json.get(key).isNull();
    }

    private TraceFormatException bad(String key, String want) {
      return new TraceFormatException(dir.resolve("config.json") + ": " + key + " must be " + want + ", got "
          + (json.has(key) ? json.get(key) : "nothing"));
    }

    private int integer(String key, int min) {
      JsonNode n = json.get(key);
      if (n == null || !n.canConvertToInt() || !n.isIntegralNumber() || n.asInt() < min)
        throw bad(key, "an integer >= " + min);
      return n.asInt();
    }

    private double number(String key) {
      JsonNode n = json.get(key);
      if (n == null || !n.isNumber()) throw bad(key, "a number");
      return n.asDouble();
    }

    private boolean bool(String key) {
      JsonNode n = json.get(key);
      if (n == null || n.isNull()) return false;
      if (!n.isBoolean()) throw bad(key, "true, false or null");
      return n.asBoolean();
    }

    /** A text option, case-insensitive, among {@code allowed}; {@code dflt} when null or absent. */
    private String text(String key, String dflt, String... allowed) {
      JsonNode n = json.get(key);
      if (n == null || n.isNull()) {
        if (dflt == null) throw bad(key, "one of " + String.join(", ", allowed));
        return dflt;
      }
      if (n.isTextual())
        for (String s : allowed) if (s.equalsIgnoreCase(n.asText())) return s;
      throw bad(key, "one of " + String.join(", ", allowed));
    }

    /** The logits as bf16 bits; a value that is not bf16 makes the case unusable for the bf16 path. */
    private static short[] bf16(float[] l, Path p) {
      short[] h = new short[l.length];
      for (int i = 0; i < l.length; i++) {
        int bits = Float.floatToRawIntBits(l[i]);
        if ((bits & 0xffff) != 0 && !Float.isNaN(l[i]))
          throw new TraceFormatException(p + ": element " + i + " (" + l[i] + ") is not a bf16 value (dtype bf16)");
        h[i] = (short) (bits >>> 16);
      }
      return h;
    }
  }
}
