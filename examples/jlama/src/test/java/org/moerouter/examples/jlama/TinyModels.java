// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama;

import com.github.tjake.jlama.safetensors.DType;
import com.github.tjake.jlama.tensor.AbstractTensor;
import com.github.tjake.jlama.tensor.FloatBufferTensor;
import com.github.tjake.jlama.tensor.TensorShape;
import com.github.tjake.jlama.tensor.operations.TensorOperationsProvider;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.SplittableRandom;

/** The checkpoints the tests make (written once per JVM into a temporary directory) and input helpers. */
final class TinyModels {
  private TinyModels() {}

  private static Path root;

  /** 8 layers, 8 experts top-2, hidden 128, bf16 weights, seed 1: the R3 model. */
  static synchronized Path r3() {
    return cached("r3", TinyMixtral.builder().layers(8).seed(1));
  }

  /** 2 layers, 8 experts top-2, hidden 128, bf16 weights: the layer tests. */
  static synchronized Path small() {
    return cached("small", TinyMixtral.builder().layers(2).seed(11));
  }

  private static Path cached(String name, TinyMixtral spec) {
    try {
      if (root == null) {
        root = Files.createTempDirectory("jlama-tiny");
        root.toFile().deleteOnExit();
      }
      Path dir = root.resolve(name);
      if (!Files.exists(dir.resolve("model.safetensors"))) spec.write(dir);
      return dir;
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** A random activation [tokens, dim] (standard normal), converted to {@code type} as TransformerBlock hands it over. */
  static AbstractTensor input(int tokens, int dim, long seed, DType type) {
    SplittableRandom r = new SplittableRandom(seed);
    FloatBufferTensor x = new FloatBufferTensor(TensorShape.of(tokens, dim));
    for (int t = 0; t < tokens; t++)
      for (int i = 0; i < dim; i++) x.set((float) gaussian(r), t, i);
    return type == DType.F32 ? x : TensorOperationsProvider.get().quantize(x, type, 0, dim);
  }

  static double gaussian(SplittableRandom r) {
    double u1 = 1.0 - r.nextDouble(), u2 = r.nextDouble();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** Row t of a 2-D jlama tensor as floats. */
  static float[] row(AbstractTensor t, int r) {
    int n = t.shape().last();
    float[] v = new float[n];
    for (int i = 0; i < n; i++) v[i] = t.get(r, i);
    return v;
  }
}
