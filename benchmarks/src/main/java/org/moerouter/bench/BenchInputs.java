// SPDX-License-Identifier: Apache-2.0
package org.moerouter.bench;

import java.util.SplittableRandom;
import org.moerouter.LogitsType;
import org.moerouter.RouterConfig;
import org.moerouter.ScoreFunction;

/** Named router configurations and deterministic synthetic inputs shared by the benchmarks. */
public final class BenchInputs {
  private BenchInputs() {}

  /** Config names in table order. */
  public static final String[] CONFIGS = {"e64k6", "e128k8", "e256k8g", "e512k10"};

  /**
   * e64k6: 64 experts, top-6, softmax (post). e128k8: 128 experts, top-8, softmax (Qwen3-MoE-like).
   * e256k8g: 256 experts, top-8, sigmoid + expert bias, 8 groups keep 4, scale 2.5 (DeepSeek-V3-like).
   * e512k10: 512 experts, top-10, softmax.
   */
  public static RouterConfig config(String name) {
    switch (name) {
      case "e64k6":
        return RouterConfig.builder(64, 6).build();
      case "e128k8":
        return RouterConfig.builder(128, 8).build();
      case "e256k8g": {
        float[] bias = new float[256];
        SplittableRandom r = new SplittableRandom(0xB1A5L);
        for (int i = 0; i < bias.length; i++) bias[i] = (float) (r.nextDouble() * 0.2 - 0.1);
        return RouterConfig.builder(256, 8).scoreFunction(ScoreFunction.SIGMOID).expertBias(bias).groups(8, 4)
            .scale(2.5f).build();
      }
      case "e512k10":
        return RouterConfig.builder(512, 10).build();
      default:
        throw new IllegalArgumentException("unknown config '" + name + "' (known: " + String.join(", ", CONFIGS) + ")");
    }
  }

  public static LogitsType dtype(String name) {
    switch (name) {
      case "fp32":
        return LogitsType.FP32;
      case "bf16":
        return LogitsType.BF16;
      default:
        throw new IllegalArgumentException("unknown dtype '" + name + "' (fp32, bf16)");
    }
  }

  /** Gaussian logits (std 2), deterministic for a seed; all finite. */
  public static float[] logitsF32(int n, long seed) {
    SplittableRandom r = new SplittableRandom(seed);
    float[] out = new float[n];
    for (int i = 0; i < n; i++) out[i] = (float) (gaussian(r) * 2.0);
    return out;
  }

  /** The same values rounded to bf16 (round to nearest even), as raw 16-bit values. */
  public static short[] logitsBf16(int n, long seed) {
    float[] f = logitsF32(n, seed);
    short[] out = new short[n];
    for (int i = 0; i < n; i++) out[i] = toBf16(f[i]);
    return out;
  }

  /** Uniform [-1, 1) gradients of the weights. */
  public static float[] gradients(int n, long seed) {
    SplittableRandom r = new SplittableRandom(seed);
    float[] out = new float[n];
    for (int i = 0; i < n; i++) out[i] = (float) (r.nextDouble() * 2 - 1);
    return out;
  }

  static short toBf16(float f) {
    int b = Float.floatToRawIntBits(f);
    int rounded = b + 0x7fff + ((b >>> 16) & 1);
    return (short) (rounded >>> 16);
  }

  private static double gaussian(SplittableRandom r) {
    // Box-Muller; one value per call is plenty for benchmark inputs.
    double u = r.nextDouble();
    double v = r.nextDouble();
    return Math.sqrt(-2.0 * Math.log1p(-u)) * Math.cos(2 * Math.PI * v);
  }
}
