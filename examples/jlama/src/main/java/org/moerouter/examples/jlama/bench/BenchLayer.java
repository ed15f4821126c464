// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama.bench;

import com.github.tjake.jlama.tensor.AbstractTensor;
import com.github.tjake.jlama.tensor.FloatBufferTensor;
import com.github.tjake.jlama.tensor.TensorShape;
import com.github.tjake.jlama.tensor.operations.TensorOperationsProvider;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.moerouter.examples.jlama.RoutedMixtralModel;
import org.moerouter.examples.jlama.TinyMixtral;

/**
 * One MoE layer for the benchmarks: a one-layer random Mixtral checkpoint of the given shape, written to a
 * temporary directory and loaded at jlama's bf16 path ({@code Precision.CHECKPOINT}), and a random input
 * [T, D] rounded to bf16 as TransformerBlock hands it to the layer.
 */
final class BenchLayer implements AutoCloseable {
  /** Layer shapes: hidden D, expert FFN width F, experts E, top-k. */
  enum Shape {
    /** Mixtral-8x7B's E, k and F/D = 3.5, at 1/8 of its width. */
    MIXTRAL(512, 1792, 8, 2),
    /** Fine-grained experts (Qwen3-MoE / DeepSeek style): 64 top-8, the same active expert parameters per token. */
    E64K8(512, 448, 64, 8);

    final int hidden, ffn, experts, topK;

    Shape(int hidden, int ffn, int experts, int topK) {
      this.hidden = hidden;
      this.ffn = ffn;
      this.experts = experts;
      this.topK = topK;
    }
  }

  final Path dir;
  final RoutedMixtralModel model;
  final AbstractTensor input;

  BenchLayer(Shape shape, int tokens) {
    try {
      dir = Files.createTempDirectory("jlama-bench");
      TinyMixtral.builder().layers(1).hidden(shape.hidden).intermediate(shape.ffn).heads(4, 2).experts(shape.experts)
          .topK(shape.topK).seed(5).write(dir);
      model = RoutedMixtralModel.load(dir, RoutedMixtralModel.Precision.CHECKPOINT);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    SplittableRandom r = new SplittableRandom(tokens);
    FloatBufferTensor x = new FloatBufferTensor(TensorShape.of(tokens, shape.hidden));
    for (int t = 0; t < tokens; t++)
      for (int i = 0; i < shape.hidden; i++) x.set((float) (r.nextDouble() * 2 - 1) * 1.7f, t, i);
    input = TensorOperationsProvider.get().quantize(x, model.matmulInputType(), 0, shape.hidden);
  }

  @Override
  public void close() {
    model.close();
    try (Stream<Path> s = Files.walk(dir)) {
      s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }
}
