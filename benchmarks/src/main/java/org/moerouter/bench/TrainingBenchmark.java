// SPDX-License-Identifier: Apache-2.0
package org.moerouter.bench;

import java.util.Arrays;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.moerouter.Backend;
import org.moerouter.DropPolicy;
import org.moerouter.LossConfig;
import org.moerouter.LossValues;
import org.moerouter.MoeRouter;
import org.moerouter.RouterConfig;
import org.moerouter.SeqLayout;
import org.moerouter.TokenDropping;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The cost of spec section 6 over host arrays, per call, next to live routing of the same logits: valid
 * tokens from a padding mask, the losses (aux + z; all four with the sequence and global losses) with
 * their gradient, and token dropping (probs; position with padding to capacity), at one batch size.
 *
 * <p>Inputs (fp32 logits, a padding mask of 10% of the rows, the live selection and its weights, G and
 * Ng) are built in {@link #setup()}; outputs are preallocated and reused. The loss gradient accumulates
 * into the same buffer call after call (the cost does not depend on its values). Scores are ns per call;
 * divide by {@code tokens} for ns/token.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(1)
@Warmup(iterations = 2, time = 300, timeUnit = TimeUnit.MILLISECONDS)
@Measurement(iterations = 5, time = 300, timeUnit = TimeUnit.MILLISECONDS)
public class TrainingBenchmark {
  @Param({"JAVA", "CPU"})
  public String backend;

  @Param({"e256k8g"})
  public String config;

  @Param({"4096"})
  public int tokens;

  private MoeRouter router;
  private float[] logits, weights, grad, probs;
  private int[] idx, keptCounts;
  private byte[] padding, valid, map, kept;
  private double[] global;
  private LossValues values;
  private final LossConfig auxZ = LossConfig.builder().auxLoss(1e-2f).zLoss(1e-3f).build();
  private LossConfig all;
  private final TokenDropping probsDrop = TokenDropping.of(1.0, DropPolicy.PROBS, false);
  private final TokenDropping positionPad = TokenDropping.of(1.0, DropPolicy.POSITION, true);

  @Setup(Level.Trial)
  public void setup() {
    Backend b = Backend.valueOf(backend);
    String why = MoeRouter.unavailableReason(b);
    if (why != null) throw new IllegalStateException("backend " + b + " is not available on this host: " + why);
    RouterConfig rc = BenchInputs.config(config);
    int e = rc.experts(), k = rc.topK();
    logits = BenchInputs.logitsF32(tokens * e, 0x7A1L + tokens);
    router = MoeRouter.create(rc, b);
    idx = new int[tokens * k];
    weights = new float[tokens * k];
    router.route(logits, tokens, idx, weights);
    padding = new byte[tokens];
    SplittableRandom r = new SplittableRandom(3);
    for (int t = 0; t < tokens; t++) padding[t] = (byte) (r.nextInt(10) == 0 ? 1 : 0);
    valid = new byte[tokens];
    router.validTokens(logits, tokens, padding, valid);
    values = new LossValues(e);
    grad = new float[tokens * e];
    global = new double[e];
    Arrays.fill(global, 4.0 * tokens * k / e);
    int seq = tokens % 1024 == 0 ? 1024 : tokens;
    all = LossConfig.builder().auxLoss(1e-2f).seqAuxLoss(1e-3f, seq, SeqLayout.SB).globalAuxLoss(1e-2f).zLoss(1e-3f)
        .build();
    map = new byte[tokens * e];
    probs = new float[tokens * e];
    kept = new byte[tokens * k];
    keptCounts = new int[e];
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    if (router != null) router.close();
    router = null;
  }

  /** Live routing of the same logits: the yardstick. */
  @Benchmark
  public int[] route() {
    router.route(logits, tokens, idx, weights);
    return idx;
  }

  @Benchmark
  public long validTokens() {
    return router.validTokens(logits, tokens, padding, valid);
  }

  @Benchmark
  public LossValues lossesAuxZ() {
    return router.losses(logits, tokens, valid, auxZ, null, 0, grad, values);
  }

  @Benchmark
  public LossValues lossesAll() {
    return router.losses(logits, tokens, valid, all, global, 4.0 * tokens, grad, values);
  }

  @Benchmark
  public long dropProbs() {
    return router.dropTokens(probsDrop, idx, weights, tokens, map, probs, kept, keptCounts);
  }

  @Benchmark
  public long dropPositionPadded() {
    return router.dropTokens(positionPad, idx, weights, tokens, map, probs, kept, keptCounts);
  }
}
