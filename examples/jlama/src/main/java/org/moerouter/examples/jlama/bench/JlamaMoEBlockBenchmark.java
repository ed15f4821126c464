// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama.bench;

import com.github.tjake.jlama.model.MoEBlock;
import com.github.tjake.jlama.tensor.AbstractTensor;
import java.util.Locale;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
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
 * References for {@link MoeLayerRoutingBenchmark}, on the same layer and input: {@code gate}, the gate
 * matmul [T, D] x [E, D]^T alone (jlama's kernel, the part of routing both routers share), and
 * {@code moeBlock}, jlama 0.8.4's own MoEBlock over the same tensors (per token: gate, softmax, top-k, two
 * experts one matrix-vector product at a time, unweighted sum; at T &gt; 1 its output rows are wrong, see
 * MoeRouterFeedForwardTest, but it does the work of T tokens).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 4, time = 1)
@Measurement(iterations = 3, time = 1)
@Fork(1)
public class JlamaMoEBlockBenchmark {
  @Param({"MIXTRAL", "E64K8"})
  public String shape;

  @Param({"1", "512"})
  public int tokens;

  private BenchLayer bench;
  private MoEBlock block;

  @Setup(Level.Trial)
  public void setup() {
    bench = new BenchLayer(BenchLayer.Shape.valueOf(shape.toUpperCase(Locale.ROOT)), tokens);
    block = bench.model.moeLayer(0).jlamaMoEBlock();
  }

  @Benchmark
  public float[] gate() {
    return bench.model.moeLayer(0).gateLogits(bench.input);
  }

  @Benchmark
  public float moeBlock() {
    try (AbstractTensor y = block.forward(bench.input, Optional.empty())) {
      return y.get(0, 0);
    }
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    bench.close();
  }
}
