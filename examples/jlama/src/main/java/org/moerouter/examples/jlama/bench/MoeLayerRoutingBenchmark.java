// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama.bench;

import com.github.tjake.jlama.tensor.AbstractTensor;
import java.util.Optional;
import org.moerouter.Backend;
import org.moerouter.examples.jlama.ExpertRouter;
import org.moerouter.examples.jlama.JlamaTopK;
import org.moerouter.examples.jlama.MixtralRouting;
import org.moerouter.examples.jlama.MoeRouterFeedForward;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.infra.Blackhole;

/**
 * Share of a jlama MoE layer's time spent routing, with jlama's routing or moe-router's, and moe-router
 * replay against live routing.
 *
 * <ul>
 *   <li>{@code route}: the routing step alone, from the layer's gate logits [T, E] (computed once in setup)
 *       to experts and weights [T, k]: {@code jlama} = per token {@code VectorMath.softMax} over E and
 *       MoEBlock's own top-k (through {@link JlamaTopK}), plus the renormalisation of the k probabilities;
 *       {@code live} = moe-router's CPU backend through {@link MixtralRouting} (one call for all T tokens);
 *       {@code replay} = the same with the experts forced from a one-sample trace recorded from these logits
 *       (copying the layer's rows out of the trace, setting the target, replaying).</li>
 *   <li>{@code layer}: the whole {@link MoeRouterFeedForward#forward} with that routing: gate matmul, routing,
 *       experts grouped by expert (jlama's bf16 GEMM), weighted combine. Same experts in all three (live
 *       routing and jlama's top-k agree on these logits; replay forces live's experts).</li>
 * </ul>
 * The routing share is {@code route / layer} of the same row. Not measured: attention, the rest of the
 * model, allocation of the output tensor outside jlama's cache (it is cached). Inputs: a one-layer
 * random checkpoint (bf16 weights, {@link BenchLayer.Shape}) and a random bf16 input [T, D].
 */
public class MoeLayerRoutingBenchmark extends LayerGrid {
  @Param({"jlama", "live", "replay"})
  public String routing;

  private BenchLayer bench;
  private MoeRouterFeedForward layer;
  private MixtralRouting moeRouter;
  private ExpertRouter router;
  private boolean replay;
  private float[] logits;
  private int[] idx;
  private float[] weights;

  @Setup(Level.Trial)
  public void setup() {
    BenchLayer.Shape s = layerShape();
    bench = new BenchLayer(s, tokens);
    layer = bench.model.moeLayer(0);
    logits = layer.gateLogits(bench.input);
    idx = new int[tokens * s.topK];
    weights = new float[tokens * s.topK];
    moeRouter = new MixtralRouting(s.experts, s.topK, 1, Backend.CPU);
    switch (routing) {
      case "jlama":
        router = new JlamaTopK(bench.model, s.experts, s.topK);
        break;
      case "live":
        router = moeRouter;
        break;
      case "replay":
        moeRouter.record();
        moeRouter.route(0, logits, tokens, idx, weights);
        moeRouter.replay(moeRouter.recording("bench"), 0);
        router = moeRouter;
        replay = true;
        break;
      default:
        throw new IllegalArgumentException("routing must be jlama, live or replay, got " + routing);
    }
    bench.model.setRouter(router);
  }

  @Benchmark
  public void route(Blackhole bh) {
    if (replay) moeRouter.rewind();
    router.route(0, logits, tokens, idx, weights);
    bh.consume(idx);
    bh.consume(weights);
  }

  @Benchmark
  public float layer() {
    if (replay) moeRouter.rewind();
    try (AbstractTensor y = layer.forward(bench.input, Optional.empty())) {
      return y.get(0, 0);
    }
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    moeRouter.close();
    bench.close();
  }
}
