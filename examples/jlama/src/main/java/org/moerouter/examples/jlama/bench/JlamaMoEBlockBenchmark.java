// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama.bench;

import com.github.tjake.jlama.model.MoEBlock;
import com.github.tjake.jlama.tensor.AbstractTensor;
import java.util.Optional;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.TearDown;

/**
 * References for {@link MoeLayerRoutingBenchmark}, on the same layer and input: {@code gate}, the gate
 * matmul [T, D] x [E, D]^T alone (jlama's kernel, the part of routing both routers share), and
 * {@code moeBlock}, jlama 0.8.4's own MoEBlock over the same tensors (per token: gate, softmax, top-k, two
 * experts one matrix-vector product at a time, unweighted sum; at T &gt; 1 its output rows are wrong, see
 * MoeRouterFeedForwardTest, but it does the work of T tokens).
 */
public class JlamaMoEBlockBenchmark extends LayerGrid {
  private BenchLayer bench;
  private MoEBlock block;

  @Setup(Level.Trial)
  public void setup() {
    bench = new BenchLayer(layerShape(), tokens);
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
