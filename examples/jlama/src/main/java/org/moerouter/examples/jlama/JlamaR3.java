// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama;

import com.github.tjake.jlama.safetensors.prompt.PromptContext;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Locale;
import org.moerouter.Backend;
import org.moerouter.RoutingAgreement;
import org.moerouter.trace.RoutingTrace;
import org.moerouter.trace.TraceFiles;
import org.moerouter.trace.TraceMetrics;

/**
 * R3 (rollout routing replay) with jlama's Mixtral routed by moe-router, end to end:
 * <ol>
 *   <li>rollout: greedy generation at the rollout precision (default: the checkpoint's, bf16 matmul
 *       inputs for a bf16 checkpoint), prompt in one batch then one forward per token, every layer's
 *       routing recorded and written as a trace file;</li>
 *   <li>trainer pass: the same tokens teacher-forced in one batch at the trainer precision (default
 *       fp32), routed live: how many (token, layer) rows pick other experts than the rollout did;</li>
 *   <li>the same pass replaying the trace read back from the file: the rollout's experts, weights from the
 *       trainer's own logits.</li>
 * </ol>
 * Without {@code --model}, a small random Mixtral is written to a temporary directory (nothing is
 * downloaded). Exit status 0 when replay reproduced the recording exactly, 1 when it did not, 2 on bad
 * arguments.
 */
public final class JlamaR3 {
  private JlamaR3() {}

  static final String USAGE = String.join("\n",
      "usage: examples/jlama/run.sh r3 [options]",
      "  --model DIR               Mixtral checkpoint (config.json, safetensors, tokenizer.json); default: a tiny random one",
      "  --prompt TEXT             default: \"The quick brown fox jumps over the lazy dog\"",
      "  --new-tokens N            tokens to generate (default 48)",
      "  --trace FILE              where the rollout trace goes (default: <tmp>/rollout-trace.safetensors)",
      "  --rollout-precision P     checkpoint | fp32 (default checkpoint)",
      "  --trainer-precision P     checkpoint | fp32 (default fp32)",
      "  --backend B               moe-router backend: auto | cpu | java (default auto)",
      "  --seed S                  seed of the tiny model (default 1)");

  public static void main(String[] args) throws IOException {
    int status;
    try {
      status = run(args, System.out);
    } catch (IllegalArgumentException e) {
      System.err.println("error: " + e.getMessage());
      System.err.println(USAGE);
      status = 2;
    }
    System.exit(status);
  }

  static int run(String[] args, PrintStream out) throws IOException {
    Path[] made = new Path[1];
    try {
      return run(args, out, made);
    } finally {
      if (made[0] != null) deleteTree(made[0]);
    }
  }

  private static void deleteTree(Path dir) throws IOException {
    try (java.util.stream.Stream<Path> s = Files.walk(dir)) {
      for (Path p : (Iterable<Path>) s.sorted(java.util.Comparator.reverseOrder())::iterator) Files.deleteIfExists(p);
    }
  }

  private static int run(String[] args, PrintStream out, Path[] made) throws IOException {
    Path model = null, trace = null;
    String prompt = "The quick brown fox jumps over the lazy dog";
    int newTokens = 48;
    long seed = 1;
    RoutedMixtralModel.Precision rolloutP = RoutedMixtralModel.Precision.CHECKPOINT;
    RoutedMixtralModel.Precision trainerP = RoutedMixtralModel.Precision.FP32;
    Backend backend = Backend.AUTO;
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (a.equals("--help") || a.equals("-h")) {
        out.println(USAGE);
        return 0;
      }
      if (i + 1 >= args.length) throw new IllegalArgumentException(a + " needs a value");
      String v = args[++i];
      switch (a) {
        case "--model": model = Path.of(v); break;
        case "--prompt": prompt = v; break;
        case "--new-tokens": newTokens = positive(a, v); break;
        case "--trace": trace = Path.of(v); break;
        case "--rollout-precision": rolloutP = precision(a, v); break;
        case "--trainer-precision": trainerP = precision(a, v); break;
        case "--backend": backend = backend(v); break;
        case "--seed": seed = Long.parseLong(v); break;
        default: throw new IllegalArgumentException("unknown option " + a);
      }
    }
    Path tmp = Files.createTempDirectory("jlama-r3");
    String modelName;
    if (model == null) {
      made[0] = tmp.resolve("tiny-mixtral");
      model = TinyMixtral.builder().layers(8).seed(seed).write(tmp.resolve("tiny-mixtral"));
      modelName = "tiny-mixtral-seed" + seed;
      out.println("model: tiny random Mixtral (seed " + seed + ", bf16 weights; its text is noise), deleted at the end");
    } else {
      modelName = model.getFileName().toString();
      out.println("model: " + model);
    }
    if (trace == null) trace = tmp.resolve("rollout-trace.safetensors");

    // 1. Rollout.
    RoutedMixtralModel rollout = RoutedMixtralModel.load(model, rolloutP);
    out.printf(Locale.ROOT, "  %d layers, %d experts, top-%d, hidden %d%n", rollout.layers(), rollout.experts(), rollout.topK(),
        rollout.getConfig().embeddingLength);
    int[] promptTokens = rollout.encodePrompt(PromptContext.of(prompt));
    int[] sequence;
    RoutingTrace recorded;
    try (MixtralRouting routing = new MixtralRouting(rollout.experts(), rollout.topK(), rollout.layers(), backend)) {
      rollout.setRouter(routing);
      routing.record();
      long t0 = System.nanoTime();
      sequence = Generation.greedy(rollout, promptTokens, newTokens, Generation.Prefill.BATCHED, -1);
      long ms = (System.nanoTime() - t0) / 1_000_000;
      recorded = routing.writeRecording(modelName, trace);
      out.printf(Locale.ROOT, "rollout (%s, matmul inputs %s; prompt batched, then one token per forward; moe-router %s):%n",
          rolloutP, rollout.matmulInputType(), routing.backend());
      out.printf(Locale.ROOT, "  %d prompt + %d new tokens in %d ms: %s%n", promptTokens.length, sequence.length - promptTokens.length,
          ms, quote(rollout.getTokenizer().decode(toLongs(Arrays.copyOfRange(sequence, promptTokens.length, sequence.length)))));
      out.printf(Locale.ROOT, "  trace: %s [%d tokens, %d layers, k=%d]%n", trace, recorded.totalTokens(), recorded.layers(), recorded.topK());
    }
    rollout.close();

    // 2 and 3. Trainer pass, live then replaying the trace read back from the file.
    int[] fed = Arrays.copyOf(sequence, sequence.length - 1);  // the last token was sampled, never fed
    RoutingTrace fromFile = TraceFiles.read(trace);
    RoutedMixtralModel trainer = RoutedMixtralModel.load(model, trainerP);
    boolean exact;
    try (MixtralRouting routing = new MixtralRouting(trainer.experts(), trainer.topK(), trainer.layers(), backend)) {
      trainer.setRouter(routing);
      int batch = Math.min(fed.length, Generation.JLAMA_MAX_BATCH);
      out.printf(Locale.ROOT, "trainer pass (%s, matmul inputs %s; teacher-forced in batches of %d):%n", trainerP,
          trainer.matmulInputType(), batch);

      MixtralRouting.Log live = new MixtralRouting.Log(trainer.layers(), trainer.topK());
      routing.live();
      routing.observe(live);
      int[] livePred = Generation.teacherForced(trainer, fed, batch);
      RoutingAgreement.Result a = TraceMetrics.agreement(fromFile, live.trace(modelName, trainer.experts(), routing.scoreFunction()));
      out.printf(Locale.ROOT, "  live routing:   %d of %d (token, layer) rows choose other experts than the rollout (%.2f%%), "
          + "%d of %d tokens in some layer; per layer:", a.differingRows(), a.tokens() * a.layers(), 100 * a.differingRowFraction(),
          a.differingTokens(), a.tokens());
      for (int l = 0; l < a.layers(); l++) out.print(" " + a.differingRows(l));
      out.println();

      MixtralRouting.Log replayed = new MixtralRouting.Log(trainer.layers(), trainer.topK());
      routing.replay(fromFile, 0);
      routing.observe(replayed);
      int[] replayPred = Generation.teacherForced(trainer, fed, batch);
      RoutingTrace used = replayed.trace(modelName, trainer.experts(), routing.scoreFunction());
      RoutingAgreement.Result r = TraceMetrics.agreement(fromFile, used);
      exact = used.contentEquals(fromFile);
      out.printf(Locale.ROOT, "  with replay:    %d rows differ; experts and their order %s the recording%n", r.differingRows(),
          exact ? "equal" : "DO NOT equal");
      out.printf(Locale.ROOT, "  greedy predictions equal to the rollout's next token (generated part): live %d, replay %d of %d%n",
          agreeing(livePred, sequence, promptTokens.length), agreeing(replayPred, sequence, promptTokens.length),
          sequence.length - promptTokens.length);
    }
    trainer.close();
    return exact ? 0 : 1;
  }

  /** Positions p >= promptLength - 1 whose prediction is the token the rollout put at p + 1. */
  private static int agreeing(int[] predicted, int[] sequence, int promptLength) {
    int n = 0;
    for (int p = promptLength - 1; p < predicted.length; p++) if (predicted[p] == sequence[p + 1]) n++;
    return n;
  }

  private static long[] toLongs(int[] a) {
    long[] r = new long[a.length];
    for (int i = 0; i < a.length; i++) r[i] = a[i];
    return r;
  }

  private static String quote(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) b.append(c < 32 || c == 127 ? '.' : c);
    return b.append('"').toString();
  }

  private static int positive(String option, String v) {
    int n;
    try {
      n = Integer.parseInt(v);
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(option + " must be a positive integer, got " + v);
    }
    if (n < 1) throw new IllegalArgumentException(option + " must be a positive integer, got " + v);
    return n;
  }

  private static RoutedMixtralModel.Precision precision(String option, String v) {
    try {
      return RoutedMixtralModel.Precision.valueOf(v.toUpperCase(Locale.ROOT));
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException(option + " must be checkpoint or fp32, got " + v);
    }
  }

  private static Backend backend(String v) {
    switch (v.toLowerCase(Locale.ROOT)) {
      case "auto": return Backend.AUTO;
      case "cpu": return Backend.CPU;
      case "java": return Backend.JAVA;
      default: throw new IllegalArgumentException("--backend must be auto, cpu or java, got " + v);
    }
  }
}
