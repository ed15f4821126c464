// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.Backend;
import org.moerouter.DropPolicy;
import org.moerouter.GroupScore;
import org.moerouter.LossConfig;
import org.moerouter.LossValues;
import org.moerouter.MoeRouter;
import org.moerouter.NonFinitePolicy;
import org.moerouter.RouterConfig;
import org.moerouter.ScoreFunction;
import org.moerouter.SeqLayout;
import org.moerouter.TokenDropping;
import org.moerouter.trace.Npy;

/** {@code route} with the options of spec sections 1-6: each reaches the library, and the flag rules. */
class RouteOptionsTest {
  @TempDir Path dir;

  static final int T = 24, E = 16, K = 3;

  /** Every v2 option at once; each output equals the library's own result for the same inputs. */
  @Test
  void everyOptionReachesTheLibraryAndItsOutputsAreWritten() throws Exception {
    SplittableRandom rnd = new SplittableRandom(7);
    float[] l = new float[T * E];
    for (int i = 0; i < l.length; i++) l[i] = (float) (rnd.nextGaussian() * 3);
    l[5 * E + 2] = Float.NaN;
    float[] bias = new float[E];
    for (int i = 0; i < E; i++) bias[i] = (float) (rnd.nextDouble() * 0.1);
    float[] dw = new float[T * K];
    for (int i = 0; i < dw.length; i++) dw[i] = (float) rnd.nextGaussian();
    byte[] pad = new byte[T];
    pad[0] = pad[13] = pad[23] = 1;
    double[] g = new double[E];
    Arrays.fill(g, 9);
    Npy.write(dir.resolve("l.npy"), l, T, E);
    Npy.write(dir.resolve("b.npy"), bias, E);
    Npy.write(dir.resolve("dw.npy"), dw, T, K);
    Npy.write(dir.resolve("p.npy"), new Npy.Array(Npy.Dtype.B1, new long[] {T}, pad));
    Npy.write(dir.resolve("g.npy"), new Npy.Array(Npy.Dtype.F8, new long[] {E}, g));
    MainTest.Run r = MainTest.run("route", "--logits", s("l.npy"), "--score", "sqrtsoftplus", "--bias", s("b.npy"),
        "--topk", "3", "--normalize", "off", "--groups", "4", "--group-topk", "2", "--group-score", "top2_sum",
        "--scale", "1.5", "--nonfinite", "zero", "--grad-weights", s("dw.npy"), "--padding-mask", s("p.npy"),
        "--aux-loss", "0.01", "--seq-aux-loss", "0.002", "--seq-length", "8", "--seq-layout", "bs",
        "--global-aux-loss", "0.03", "--global-tokens", s("g.npy"), "--global-num-tokens", "70", "--z-loss", "0.001",
        "--capacity-factor", "0.75", "--drop-policy", "position", "--pad-to-capacity", "--bias-update-rate", "0.01",
        "--backend", "cpu", "--out", s("o"));
    assertEquals(0, r.status, r.err);
    assertTrue(r.out.contains("rows with non-finite logits: 1"), r.out);
    assertEquals(new TreeSet<>(Arrays.asList(RouteCommand.OUTPUTS)), files(dir.resolve("o")), "every output");

    RouterConfig c = RouterConfig.builder(E, K).scoreFunction(ScoreFunction.SQRTSOFTPLUS).expertBias(bias)
        .normalize(false).groups(4, 2).groupScore(GroupScore.TOP2_SUM).scale(1.5f).nonFinite(NonFinitePolicy.ZERO).build();
    try (MoeRouter ref = MoeRouter.create(c, Backend.JAVA)) {
      int[] idx = new int[T * K];
      float[] w = new float[T * K];
      byte[] rows = new byte[T];
      ref.route(l, T, idx, w, rows);
      assertArrayEquals(idx, read("idx.npy").toIntArray());
      assertArrayEquals(w, read("weights.npy").toFloatArray());
      assertArrayEquals(rows, (byte[]) read("nonfinite_rows.npy").data());
      TokenDropping d = TokenDropping.of(0.75, DropPolicy.POSITION, true);
      byte[] map = new byte[T * E], kept = new byte[T * K];
      float[] probs = new float[T * E];
      int[] keptCounts = new int[E];
      ref.dropTokens(d, idx, w, T, map, probs, kept, keptCounts);
      assertArrayEquals(map, (byte[]) read("routing_map.npy").data());
      assertArrayEquals(probs, read("routing_probs.npy").toFloatArray());
      assertArrayEquals(kept, (byte[]) read("kept.npy").data());
      assertArrayEquals(keptCounts, read("kept_counts.npy").toIntArray());
      float[] masked = new float[T * K], grad = new float[T * E];
      TokenDropping.maskDropped(T, K, dw, kept, masked);
      ref.backward(l, T, idx, masked, rows, grad);
      assertArrayEquals(grad, read("grad_logits.npy").toFloatArray(), "backward through kept entries");
      byte[] valid = new byte[T];
      assertEquals(T - 4, ref.validTokens(l, T, pad, valid), "3 padded rows and one NaN row");
      int[] counts = new int[E], validCounts = new int[E];
      ref.tokensPerExpert(map, T, null, counts);
      ref.tokensPerExpert(map, T, valid, validCounts);
      assertArrayEquals(counts, read("tokens_per_expert.npy").toIntArray());
      assertArrayEquals(validCounts, read("valid_tokens_per_expert.npy").toIntArray());
      LossConfig lc = LossConfig.builder().auxLoss(0.01f).seqAuxLoss(0.002f, 8, SeqLayout.BS).globalAuxLoss(0.03f)
          .zLoss(0.001f).build();
      float[] lossGrad = new float[T * E];
      LossValues v = ref.losses(l, T, valid, lc, g, 70, lossGrad, new LossValues(E));
      assertEquals(v.auxLoss(), read("aux_loss.npy").getDouble(0));
      assertEquals(v.seqAuxLoss(), read("seq_aux_loss.npy").getDouble(0));
      assertEquals(v.globalAuxLoss(), read("global_aux_loss.npy").getDouble(0));
      assertEquals(v.zLoss(), read("z_loss.npy").getDouble(0));
      assertEquals(0, read("z_loss.npy").ndim(), "a scalar");
      assertArrayEquals(v.auxTokensPerExpert(), read("aux_tokens_per_expert.npy").toIntArray());
      assertArrayEquals(lossGrad, read("loss_grad_logits.npy").toFloatArray());
      assertArrayEquals(ref.updateExpertBias(validCounts, 0.01f), read("updated_bias.npy").toFloatArray());
    }

    // A plain run into the same folder removes what it does not write.
    r = MainTest.run("route", "--logits", s("l.npy"), "--score", "softmax", "--topk", "2", "--out", s("o"));
    assertEquals(0, r.status, r.err);
    assertEquals(new TreeSet<>(List.of("idx.npy", "weights.npy", "tokens_per_expert.npy")), files(dir.resolve("o")));
  }

  /** Options that need another one, bad choices, and the library's own rules (exit 1 with its text). */
  @Test
  void optionRulesGiveOneLineErrors() throws Exception {
    Npy.write(dir.resolve("l.npy"), new float[T * E], T, E);
    Npy.write(dir.resolve("g.npy"), new float[E], E);
    String[] base = {"route", "--logits", s("l.npy"), "--score", "sigmoid", "--topk", "2", "--out", s("o")};
    Object[][] cases = {
        {2, "--seq-length needs --seq-aux-loss", new String[] {"--seq-length", "8"}},
        {2, "--seq-aux-loss needs --seq-length", new String[] {"--seq-aux-loss", "0.1"}},
        {2, "--seq-layout needs --seq-aux-loss", new String[] {"--seq-layout", "bs"}},
        {2, "--global-aux-loss needs --global-tokens", new String[] {"--global-aux-loss", "0.1"}},
        {2, "--global-aux-loss needs --global-num-tokens", new String[] {"--global-aux-loss", "0.1", "--global-tokens", s("g.npy")}},
        {2, "--global-tokens needs --global-aux-loss", new String[] {"--global-tokens", s("g.npy")}},
        {2, "--drop-policy needs --capacity-factor", new String[] {"--drop-policy", "position"}},
        {2, "--pad-to-capacity needs --capacity-factor", new String[] {"--pad-to-capacity"}},
        {2, "--group-score needs --groups", new String[] {"--group-score", "max"}},
        {2, "--normalize must be on or off, got 'yes'", new String[] {"--normalize", "yes"}},
        {2, "--nonfinite must be propagate, zero or error, got 'skip'", new String[] {"--nonfinite", "skip"}},
        {2, "--drop-policy must be probs or position, got 'random'", new String[] {"--capacity-factor", "1", "--drop-policy", "random"}},
        {2, "--seq-layout must be sb or bs, got 'sbh'", new String[] {"--seq-aux-loss", "1", "--seq-length", "8", "--seq-layout", "sbh"}},
        {2, "--group-score must be topk_sum, top2_sum or max, got 'sum'", new String[] {"--groups", "4", "--group-topk", "2", "--group-score", "sum"}},
        {2, "--capacity-factor expects a number, got 'x'", new String[] {"--capacity-factor", "x"}},
        {2, "option --z-loss given twice", new String[] {"--z-loss", "1", "--z-loss", "2"}},
        {1, "invalid token dropping: capacity factor must be finite and > 0, got 0", new String[] {"--capacity-factor", "0"}},
        {1, "invalid loss config: aux loss coefficient must be finite and >= 0, got -1", new String[] {"--aux-loss", "-1"}},
        {1, "seq aux loss: tokens (24) must be a multiple of the seq length (5)", new String[] {"--seq-aux-loss", "1", "--seq-length", "5"}},
        {1, "TOP2_SUM needs at least 2 experts per group, got 1", new String[] {"--groups", "16", "--group-topk", "8", "--group-score", "top2_sum"}},
        {1, "global tokens per expert must have shape [16]", new String[] {"--global-aux-loss", "1", "--global-tokens", s("l.npy"), "--global-num-tokens", "3"}},
        {1, "padding mask must have shape [24]", new String[] {"--padding-mask", s("g.npy")}},
    };
    for (Object[] c : cases) {
      List<String> args = new ArrayList<>(Arrays.asList(base));
      args.addAll(Arrays.asList((String[]) c[2]));
      MainTest.Run r = MainTest.run(args.toArray(new String[0]));
      String where = String.join(" ", (String[]) c[2]) + " -> " + r.err;
      assertEquals((int) c[0], r.status, where);
      assertTrue(r.err.startsWith("moe-router: error: "), where);
      assertTrue(r.err.contains((String) c[1]), where);
      assertFalse(r.err.contains("\tat "), where);
      assertFalse(Files.exists(dir.resolve("o")), where + ": nothing written");
    }
  }

  /** route --help and case --help describe every option the command accepts. */
  @Test
  void helpDescribesEveryAcceptedOption() {
    String[] route = {"--logits", "--score", "--topk", "--pre-softmax", "--bias", "--normalize", "--groups", "--group-topk",
        "--group-score", "--scale", "--nonfinite", "--replay", "--replay-mask", "--minus-one-rows", "--grad-weights",
        "--padding-mask", "--aux-loss", "--seq-aux-loss", "--seq-length", "--seq-layout", "--global-aux-loss",
        "--global-tokens", "--global-num-tokens", "--z-loss", "--capacity-factor", "--drop-policy", "--pad-to-capacity",
        "--bias-update-rate", "--backend", "--out"};
    String help = MainTest.run("route", "--help").out;
    String body = help.substring(help.indexOf('\n'));  // the option lines, not the usage line
    for (String flag : route) {
      assertTrue(body.contains(" " + flag + " "), "route --help does not describe " + flag);
      assertTrue(RouteCommand.USAGE.contains(flag + " ") || RouteCommand.USAGE.contains(flag + "]"), "usage lacks " + flag);
    }
    String caseHelp = MainTest.run("case", "--help").out;
    for (String flag : new String[] {"--case", "--backend", "--out"}) assertTrue(caseHelp.contains("  " + flag + " "), flag);
    assertTrue(MainTest.run("--help").out.contains("case --case DIR"), "the top-level usage lists case");
  }

  String s(String name) {
    return dir.resolve(name).toString();
  }

  Npy.Array read(String name) throws Exception {
    return Npy.read(dir.resolve("o").resolve(name));
  }

  static TreeSet<String> files(Path d) throws Exception {
    TreeSet<String> out = new TreeSet<>();
    try (var s = Files.list(d)) {
      s.forEach(p -> out.add(p.getFileName().toString()));
    }
    return out;
  }
}
