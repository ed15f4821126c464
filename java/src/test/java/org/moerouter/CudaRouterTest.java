// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * CUDA backend against the native CPU backend (and the float64 goldens): indices exact, weights and
 * gradients within 1e-5 relative. Tagged {@code gpu} (select them with {@code --include-tag gpu}).
 * Without a usable CUDA device each test is skipped with the reason, unless
 * {@code -Dmoerouter.requireGpu=true}, in which case they fail.
 */
@Tag("gpu")
class CudaRouterTest {
  private static final boolean REQUIRE_GPU = Boolean.getBoolean("moerouter.requireGpu");
  private static final java.util.concurrent.atomic.AtomicBoolean SKIP_NOTICE = new java.util.concurrent.atomic.AtomicBoolean();
  private static final double REL = 1e-5;
  /**
   * Backend under test: CUDA. {@code -Dmoerouter.cudaTest.backend=CPU|JAVA} runs the same checks on
   * another backend, which validates the test itself (golden parsing, tolerances) on a host without a GPU.
   */
  private static final Backend UNDER_TEST = Backend.valueOf(System.getProperty("moerouter.cudaTest.backend", "CUDA"));

  // Per test, so that each one is reported as skipped with the reason (a class-level abort is not).
  @BeforeEach
  void cudaAvailable() {
    String why = MoeRouter.unavailableReason(UNDER_TEST);
    if (why == null) return;
    String msg = "CUDA backend unavailable: " + why + " (library loaded=" + NativeLibrary.loaded()
        + ", cudaCompiled=" + NativeLibrary.cudaCompiled() + ", devices=" + NativeLibrary.cudaDeviceCount() + ")";
    if (REQUIRE_GPU) fail("moerouter.requireGpu=true but " + msg);
    // Surefire shows a skip's reason only in its XML report: say it once on the console.
    if (SKIP_NOTICE.compareAndSet(false, true))
      System.out.println("[moe-router] GPU tests skipped: " + msg + " (-Dmoerouter.requireGpu=true makes this a failure)");
    Assumptions.abort(msg + "; set -Dmoerouter.requireGpu=true to make this a failure");
  }

  @Test
  void libraryReportsCuda() {
    Assumptions.assumeTrue(UNDER_TEST == Backend.CUDA, "backend under test is " + UNDER_TEST);
    assertTrue(NativeLibrary.cudaCompiled(), "library compiled with CUDA");
    assertTrue(NativeLibrary.cudaDeviceCount() > 0, "a CUDA device is visible");
    assertEquals(Backend.CUDA, MoeRouter.defaultBackend());
  }

  // ------------------------------------------------------------------------------------ goldens

  @Test
  void goldens() {
    List<Goldens.Case> cases;
    try {
      cases = Goldens.all();
    } catch (IllegalStateException e) {
      if (REQUIRE_GPU) fail(e.getMessage());
      Assumptions.abort(e.getMessage());
      return;
    }
    for (Goldens.Case c : cases) checkGolden(c);
  }

  private static void checkGolden(Goldens.Case c) {
    String name = c.name;
    RouterConfig config = c.config;
    int tokens = c.tokens, k = config.topK(), experts = config.experts();
    float[] logits = c.logits;
    int[] liveIdx = c.liveIdx, replayIdx = c.replayIdx;
    float[] dw = c.gradWeights;

    try (MoeRouter gpu = MoeRouter.create(config, UNDER_TEST); MoeRouter cpu = MoeRouter.create(config, Backend.CPU)) {
      int[] idx = filled(tokens * k, -7);
      float[] w = filled(tokens * k, Float.NaN);
      long nf = gpu.route(logits, tokens, idx, w);
      assertEquals(0, nf, name + ": non-finite rows");
      assertArrayEquals(liveIdx, idx, name + ": live indices vs golden");
      assertClose(c.liveWeights, w, name + ": live weights vs golden");
      compareWithCpu(name + " live", cpu, gpu, logits, null, LogitsType.FP32, tokens, null, null);

      idx = filled(tokens * k, -7);
      w = filled(tokens * k, Float.NaN);
      gpu.replay(logits, tokens, replayIdx, null, idx, w);
      assertArrayEquals(replayIdx, idx, name + ": replay indices");
      assertClose(c.replayWeights, w, name + ": replay weights vs golden");
      compareWithCpu(name + " replay", cpu, gpu, logits, null, LogitsType.FP32, tokens, replayIdx, null);

      float[] g = filled(tokens * experts, Float.NaN);
      gpu.backward(logits, tokens, liveIdx, dw, g);
      assertCloseGrad(c.liveGradLogits, g, name + ": live backward vs golden");
      g = filled(tokens * experts, Float.NaN);
      gpu.backward(logits, tokens, replayIdx, dw, g);
      assertCloseGrad(c.replayGradLogits, g, name + ": replay backward vs golden");
      compareBackward(name, cpu, gpu, logits, null, LogitsType.FP32, tokens, replayIdx, dw);

      // the same rows as bf16 (ties become common): CUDA == CPU
      short[] bf = toBf16(logits);
      compareWithCpu(name + " live bf16", cpu, gpu, null, bf, LogitsType.BF16, tokens, null, null);
      compareWithCpu(name + " replay bf16", cpu, gpu, null, bf, LogitsType.BF16, tokens, replayIdx, null);
      compareBackward(name + " bf16", cpu, gpu, null, bf, LogitsType.BF16, tokens, liveIdx, dw);
      gpu.checkReplay();
    }
  }

  // ------------------------------------------------------------------------------------ random

  private static RouterConfig[] randomConfigs(Random rnd) {
    float[] bias256 = new float[256];
    float[] bias96 = new float[96];
    for (int i = 0; i < bias256.length; i++) bias256[i] = (float) rnd.nextGaussian() * 0.05f;
    for (int i = 0; i < bias96.length; i++) bias96[i] = (float) rnd.nextGaussian() * 0.05f;
    return new RouterConfig[] {
      RouterConfig.builder(8, 2).build(),
      RouterConfig.builder(100, 7).build(),
      RouterConfig.builder(128, 8).scale(2f).build(),
      RouterConfig.builder(600, 40).build(),
      RouterConfig.builder(2048, 16).preSoftmax(true).build(),
      RouterConfig.builder(64, 6).preSoftmax(true).build(),
      RouterConfig.builder(16, 1).scoreFunction(ScoreFunction.SIGMOID).build(),
      RouterConfig.builder(33, 33).scoreFunction(ScoreFunction.SIGMOID).build(),
      RouterConfig.builder(96, 8).scoreFunction(ScoreFunction.SIGMOID).expertBias(bias96).groups(4, 2).build(),
      RouterConfig.builder(256, 8).scoreFunction(ScoreFunction.SIGMOID).expertBias(bias256).groups(8, 4)
          .scale(2.5f).build(),
      RouterConfig.builder(4096, 8).scoreFunction(ScoreFunction.SIGMOID).groups(64, 8).build(),
    };
  }

  @Test
  void randomInputsMatchCpu() {
    Random rnd = new Random(1234);
    for (RouterConfig config : randomConfigs(rnd)) {
      int tokens = config.experts() >= 2048 ? 64 : 300;
      try (MoeRouter gpu = MoeRouter.create(config, UNDER_TEST);
          MoeRouter cpu = MoeRouter.create(config, Backend.CPU)) {
        for (LogitsType type : LogitsType.values()) {
          for (int mode = 0; mode < 3; mode++) {
            String what = config + " " + type + " mode " + mode;
            float[] f = randomLogits(rnd, tokens, config.experts(), mode);
            int[] rep = TestData.randomSelection(rnd, tokens, config.topK(), config.experts());
            byte[] mask = new byte[tokens];
            for (int t = 0; t < tokens; t++) mask[t] = (byte) (rnd.nextInt(3) == 0 ? 0 : 1);
            float[] dw = new float[tokens * config.topK()];
            for (int i = 0; i < dw.length; i++) dw[i] = (float) rnd.nextGaussian();
            float[] f32 = type == LogitsType.FP32 ? f : null;
            short[] half = type == LogitsType.BF16 ? toBf16(f) : type == LogitsType.FP16 ? toF16(f) : null;
            compareWithCpu(what + " live", cpu, gpu, f32, half, type, tokens, null, null);
            compareWithCpu(what + " replay", cpu, gpu, f32, half, type, tokens, rep, null);
            compareWithCpu(what + " replay+mask", cpu, gpu, f32, half, type, tokens, rep, mask);
            compareBackward(what + " backward(replay)", cpu, gpu, f32, half, type, tokens, rep, dw);
            int[] live = new int[tokens * config.topK()];
            float[] w = new float[live.length];
            route(cpu, f32, half, type, tokens, null, null, live, w);
            compareBackward(what + " backward(live)", cpu, gpu, f32, half, type, tokens, live, dw);
          }
        }
        gpu.checkReplay();
      }
    }
  }

  @Test
  void expertBiasUpdateMatchesCpu() {
    Random rnd = new Random(99);
    float[] bias = new float[256];
    RouterConfig config = RouterConfig.builder(256, 8).scoreFunction(ScoreFunction.SIGMOID).expertBias(bias)
        .groups(8, 4).build();
    try (MoeRouter gpu = MoeRouter.create(config, UNDER_TEST); MoeRouter cpu = MoeRouter.create(config, Backend.CPU)) {
      for (int step = 0; step < 3; step++) {
        for (int i = 0; i < bias.length; i++) bias[i] = (float) rnd.nextGaussian() * 0.1f;
        gpu.setExpertBias(bias);
        cpu.setExpertBias(bias);
        float[] f = randomLogits(rnd, 500, 256, 0);
        compareWithCpu("bias step " + step, cpu, gpu, f, null, LogitsType.FP32, 500, null, null);
      }
    }
  }

  // ------------------------------------------------------------------------------------ outputs written

  @Test
  void poisonedOutputsAreFullyWritten() {
    Random rnd = new Random(5);
    for (RouterConfig config : randomConfigs(rnd)) {
      int tokens = 77, k = config.topK(), e = config.experts();
      float[] f = randomLogits(rnd, tokens, e, 0);
      try (MoeRouter gpu = MoeRouter.create(config, UNDER_TEST)) {
        int[] idx = filled(tokens * k, -7);
        float[] w = filled(tokens * k, Float.NaN);
        gpu.route(f, tokens, idx, w);
        for (int i = 0; i < idx.length; i++) {
          assertTrue(idx[i] >= 0 && idx[i] < e, config + ": index " + i + " not written: " + idx[i]);
          assertTrue(Float.isFinite(w[i]), config + ": weight " + i + " not written");
        }
        float[] g = filled(tokens * e, Float.NaN);
        gpu.backward(f, tokens, idx, new float[tokens * k], g);
        for (int i = 0; i < g.length; i++) assertTrue(Float.isFinite(g[i]), config + ": grad " + i + " not written");
      }
    }
  }

  // ------------------------------------------------------------------------------------ replay validation

  @Test
  void invalidReplayRowsAreRejected() {
    RouterConfig config = RouterConfig.builder(64, 6).build();
    Random rnd = new Random(3);
    int tokens = 200, k = 6;
    float[] f = randomLogits(rnd, tokens, 64, 0);
    int[] rep = TestData.randomSelection(rnd, tokens, k, 64);
    rep[57 * k + 5] = rep[57 * k + 1]; // duplicate in row 57
    rep[120 * k + 2] = 64; // out of range in row 120
    try (MoeRouter gpu = MoeRouter.create(config, UNDER_TEST); MoeRouter cpu = MoeRouter.create(config, Backend.CPU)) {
      int[] idx = filled(tokens * k, -7);
      float[] w = filled(tokens * k, -1f);
      MoeRouterException ex = assertThrows(MoeRouterException.class, () -> gpu.replay(f, tokens, rep, null, idx, w));
      assertEquals(Status.INVALID_REPLAY, ex.status());
      assertTrue(ex.getMessage().contains("row 57"), ex.getMessage());
      assertTrue(Arrays.stream(idx).allMatch(v -> v == -7), "rejected replay wrote indices");
      for (float v : w) assertEquals(-1f, v, "rejected replay wrote weights");

      byte[] mask = new byte[tokens];
      Arrays.fill(mask, (byte) 1);
      mask[57] = 0;
      ex = assertThrows(MoeRouterException.class, () -> gpu.replay(f, tokens, rep, mask, idx, w));
      assertEquals(Status.INVALID_REPLAY, ex.status());
      assertTrue(ex.getMessage().contains("row 120"), ex.getMessage());

      mask[120] = 0; // both bad rows routed live: accepted
      compareWithCpu("masked bad rows", cpu, gpu, f, null, LogitsType.FP32, tokens, rep, mask);

      float[] g = filled(tokens * 64, -1f);
      ex = assertThrows(MoeRouterException.class, () -> gpu.backward(f, tokens, rep, new float[tokens * k], g));
      assertEquals(Status.INVALID_REPLAY, ex.status());
      assertTrue(ex.getMessage().contains("row 57"), ex.getMessage());
      for (float v : g) assertEquals(-1f, v, "rejected backward wrote gradients");
      gpu.checkReplay(); // host-path rejections are reported synchronously, nothing pending
    }
  }

  // ------------------------------------------------------------------------------------ helpers

  private static long route(MoeRouter r, float[] f32, short[] half, LogitsType type, int tokens, int[] rep,
      byte[] mask, int[] idx, float[] w) {
    if (rep == null) return f32 != null ? r.route(f32, tokens, idx, w) : r.route(half, type, tokens, idx, w);
    return f32 != null ? r.replay(f32, tokens, rep, mask, idx, w) : r.replay(half, type, tokens, rep, mask, idx, w);
  }

  private static void compareWithCpu(String what, MoeRouter cpu, MoeRouter gpu, float[] f32, short[] half,
      LogitsType type, int tokens, int[] rep, byte[] mask) {
    int n = tokens * cpu.config().topK();
    int[] ci = new int[n];
    float[] cw = new float[n];
    int[] gi = filled(n, -7);
    float[] gw = filled(n, Float.NaN);
    long cnf = route(cpu, f32, half, type, tokens, rep, mask, ci, cw);
    long gnf = route(gpu, f32, half, type, tokens, rep, mask, gi, gw);
    assertArrayEquals(ci, gi, what + ": indices CUDA vs CPU");
    assertEquals(cnf, gnf, what + ": non-finite rows CUDA vs CPU");
    for (int i = 0; i < n; i++) assertRel(cw[i], gw[i], what + ": weight " + i + " CUDA vs CPU");
  }

  private static void compareBackward(String what, MoeRouter cpu, MoeRouter gpu, float[] f32, short[] half,
      LogitsType type, int tokens, int[] idx, float[] dw) {
    int n = tokens * cpu.config().experts();
    float[] cg = new float[n];
    float[] gg = filled(n, Float.NaN);
    if (f32 != null) {
      cpu.backward(f32, tokens, idx, dw, cg);
      gpu.backward(f32, tokens, idx, dw, gg);
    } else {
      cpu.backward(half, type, tokens, idx, dw, cg);
      gpu.backward(half, type, tokens, idx, dw, gg);
    }
    for (int i = 0; i < n; i++) assertRel(cg[i], gg[i], what + ": grad " + i + " CUDA vs CPU");
  }

  private static void assertRel(float expected, float actual, String what) {
    if (Float.floatToIntBits(expected) == Float.floatToIntBits(actual)) return;
    if (Float.isNaN(expected) && Float.isNaN(actual)) return;
    double tol = REL * Math.max(Math.abs(expected), Math.abs(actual));
    if (!(Math.abs((double) expected - actual) <= tol)) fail(what + ": expected " + expected + ", got " + actual);
  }

  private static void assertClose(double[] expected, float[] actual, String what) {
    assertEquals(expected.length, actual.length, what + ": length");
    for (int i = 0; i < expected.length; i++)
      if (!(Math.abs(expected[i] - actual[i]) <= REL * Math.abs(expected[i]) + 1e-7))
        fail(what + ": element " + i + " expected " + expected[i] + ", got " + actual[i]);
  }

  // Gradients: float32 sums with cancellation; relative to the element, with a small absolute floor.
  private static void assertCloseGrad(double[] expected, float[] actual, String what) {
    assertEquals(expected.length, actual.length, what + ": length");
    for (int i = 0; i < expected.length; i++)
      if (!(Math.abs(expected[i] - actual[i]) <= REL * Math.abs(expected[i]) + 1e-6))
        fail(what + ": element " + i + " expected " + expected[i] + ", got " + actual[i]);
  }

  private static float[] randomLogits(Random rnd, int tokens, int experts, int mode) {
    float[] f = new float[tokens * experts];
    for (int i = 0; i < f.length; i++) {
      f[i] = (float) (rnd.nextGaussian() * 2.0);
      if (mode == 1) f[i] = Math.round(f[i] * 2f) / 2f; // heavy ties
    }
    if (mode == 2) { // non-finite rows
      for (int t = 0; t < tokens; t++) {
        int r = rnd.nextInt(6);
        int base = t * experts;
        if (r == 0) f[base + rnd.nextInt(experts)] = Float.NaN;
        if (r == 1) f[base + rnd.nextInt(experts)] = Float.POSITIVE_INFINITY;
        if (r == 2) f[base + rnd.nextInt(experts)] = Float.NEGATIVE_INFINITY;
        if (r == 3) Arrays.fill(f, base, base + experts, Float.NaN);
      }
    }
    return f;
  }

  private static short[] toBf16(float[] f) {
    short[] h = new short[f.length];
    for (int i = 0; i < f.length; i++)
      h[i] = Float.isNaN(f[i]) ? (short) 0x7fc0 : (short) (Float.floatToRawIntBits(f[i]) >>> 16);
    return h;
  }

  private static short[] toF16(float[] f) {
    short[] h = new short[f.length];
    for (int i = 0; i < f.length; i++) h[i] = toHalf(f[i]);
    return h;
  }

  // float -> binary16 by truncation (Java 17 has no Float.floatToFloat16); any valid half will do.
  private static short toHalf(float v) {
    if (Float.isNaN(v)) return (short) 0x7e00;
    int b = Float.floatToRawIntBits(v);
    int sign = (b >>> 16) & 0x8000;
    int e = ((b >>> 23) & 0xff) - 127 + 15;
    if (e >= 31) return (short) (sign | 0x7c00);
    if (e <= 0) return (short) sign;
    return (short) (sign | (e << 10) | ((b >>> 13) & 0x3ff));
  }

  private static int[] filled(int n, int v) {
    int[] a = new int[n];
    Arrays.fill(a, v);
    return a;
  }

  private static float[] filled(int n, float v) {
    float[] a = new float[n];
    Arrays.fill(a, v);
    return a;
  }
}
