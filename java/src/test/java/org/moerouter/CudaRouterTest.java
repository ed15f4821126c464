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
 * CUDA backend against the native CPU backend (bit for bit: indices, weights and gradients) and the
 * float64 goldens (indices exact, weights and gradients within 1e-5 relative), through the host-staged
 * and the device-pointer calls. Tagged {@code gpu} (select them with {@code --include-tag gpu}).
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
      // and as fp16
      short[] h = toF16(logits);
      compareWithCpu(name + " live fp16", cpu, gpu, null, h, LogitsType.FP16, tokens, null, null);
      compareWithCpu(name + " replay fp16", cpu, gpu, null, h, LogitsType.FP16, tokens, replayIdx, null);
      compareBackward(name + " fp16", cpu, gpu, null, h, LogitsType.FP16, tokens, replayIdx, dw);
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

  // ------------------------------------------------------------------------------------ device pointers

  /** Every golden, fp32/bf16/fp16, live, replay and backward through routeDevice/backwardDevice. */
  @Test
  void goldensThroughDevicePointers() {
    requireCudaBackend();
    List<Goldens.Case> cases = Goldens.all();
    try (CudaMemory mem = new CudaMemory()) {
      long stream = mem.stream();
      for (Goldens.Case c : cases) {
        int t = c.tokens, k = c.config.topK(), e = c.config.experts();
        try (MoeRouter gpu = MoeRouter.create(c.config, Backend.CUDA);
            MoeRouter cpu = MoeRouter.create(c.config, Backend.CPU)) {
          for (LogitsType type : LogitsType.values()) {
            String what = c.name + " " + type + " device";
            short[] half = type == LogitsType.BF16 ? toBf16(c.logits) : type == LogitsType.FP16 ? toF16(c.logits) : null;
            long dLogits = half == null ? mem.upload(c.logits) : mem.upload(half);
            long dRep = mem.upload(c.replayIdx), dDw = mem.upload(c.gradWeights);
            for (int replay = 0; replay < 2; replay++) {
              int[] rep = replay == 1 ? c.replayIdx : null;
              int[] ci = new int[t * k];
              float[] cw = new float[t * k];
              long cnf = route(cpu, half == null ? c.logits : null, half, type, t, rep, null, ci, cw);
              long dIdx = mem.poisoned(4L * t * k), dW = mem.poisoned(4L * t * k), dNf = mem.poisoned(8);
              gpu.routeDevice(dLogits, type, t, replay == 1 ? dRep : 0, 0, dIdx, dW, dNf, stream);
              CudaMemory.sync(stream);
              int[] gi = mem.ints(dIdx, t * k);
              float[] gw = mem.floats(dW, t * k);
              String w = what + (replay == 1 ? " replay" : " live");
              assertArrayEquals(ci, gi, w + ": indices CUDA vs CPU");
              for (int i = 0; i < gw.length; i++) assertSameBits(cw[i], gw[i], w + ": weight " + i);
              assertEquals(cnf, mem.oneLong(dNf), w + ": non-finite rows");
              if (type == LogitsType.FP32) {
                assertArrayEquals(replay == 1 ? c.replayIdx : c.liveIdx, gi, w + ": indices vs golden");
                assertClose(replay == 1 ? c.replayWeights : c.liveWeights, gw, w + ": weights vs golden");
              }
              float[] cg = new float[t * e];
              if (half == null) cpu.backward(c.logits, t, ci, c.gradWeights, cg);
              else cpu.backward(half, type, t, ci, c.gradWeights, cg);
              long dGrad = mem.poisoned(4L * t * e);
              gpu.backwardDevice(dLogits, type, t, dIdx, dDw, dGrad, stream);
              CudaMemory.sync(stream);
              float[] gg = mem.floats(dGrad, t * e);
              for (int i = 0; i < gg.length; i++) assertSameBits(cg[i], gg[i], w + " backward: grad " + i);
            }
          }
          gpu.checkReplay();
        }
      }
    }
  }

  /** A rejected device replay writes nothing and is reported once by checkReplay. */
  @Test
  void deviceRejectionIsReportedOnceByCheckReplay() {
    requireCudaBackend();
    RouterConfig config = RouterConfig.builder(64, 6).build();
    int tokens = 300, k = 6;
    Random rnd = new Random(8);
    float[] f = randomLogits(rnd, tokens, 64, 0);
    int[] rep = TestData.randomSelection(rnd, tokens, k, 64);
    rep[211 * k + 4] = rep[211 * k];
    try (CudaMemory mem = new CudaMemory(); MoeRouter gpu = MoeRouter.create(config, Backend.CUDA)) {
      long stream = mem.stream();
      long dIdx = mem.poisoned(4L * tokens * k), dW = mem.poisoned(4L * tokens * k);
      gpu.routeDevice(mem.upload(f), LogitsType.FP32, tokens, mem.upload(rep), 0, dIdx, dW, 0, stream);
      CudaMemory.sync(stream);
      assertTrue(Arrays.stream(mem.ints(dIdx, tokens * k)).allMatch(v -> v == -1), "rejected call wrote indices");
      MoeRouterException ex = assertThrows(MoeRouterException.class, gpu::checkReplay);
      assertEquals(Status.INVALID_REPLAY, ex.status());
      assertTrue(ex.getMessage().contains("row 211"), ex.getMessage());
      gpu.checkReplay(); // reported once
    }
  }

  /** T = 0 on every path: nothing written, no error. */
  @Test
  void zeroTokensWriteNothing() {
    for (RouterConfig config : randomConfigs(new Random(4))) {
      try (MoeRouter gpu = MoeRouter.create(config, UNDER_TEST)) {
        int[] idx = filled(config.topK(), -7);
        float[] w = filled(config.topK(), -1f);
        assertEquals(0, gpu.route(new float[0], 0, idx, w));
        assertEquals(0, gpu.replay(new float[0], 0, new int[0], null, idx, w));
        gpu.backward(new float[0], 0, new int[0], new float[0], w);
        assertEquals(-7, idx[0], config + ": T=0 wrote indices");
        assertEquals(-1f, w[0], config + ": T=0 wrote weights");
        if (UNDER_TEST == Backend.CUDA) {
          try (CudaMemory mem = new CudaMemory()) {
            long stream = mem.stream(), dIdx = mem.poisoned(64), dW = mem.poisoned(64), dNf = mem.poisoned(8);
            gpu.routeDevice(dIdx, LogitsType.BF16, 0, dIdx, 0, dIdx, dW, dNf, stream);
            gpu.backwardDevice(dW, LogitsType.FP16, 0, dIdx, dW, dW, stream);
            CudaMemory.sync(stream);
            assertEquals(0, mem.oneLong(dNf), config + ": T=0 non-finite count");
            assertEquals(-1, mem.ints(dIdx, 1)[0], config + ": T=0 wrote device indices");
          }
        }
        gpu.checkReplay();
      }
    }
  }

  // ------------------------------------------------------------------------------------ large T

  /**
   * Token counts that make every grid-stride loop run many times, one not a multiple of any block's
   * token count: live, masked replay and backward, CUDA vs CPU bit for bit.
   */
  @Test
  void largeTokenCountsMatchCpu() {
    Random rnd = new Random(20000);
    RouterConfig[] configs = {
      RouterConfig.builder(64, 6).build(),
      RouterConfig.builder(256, 8).scoreFunction(ScoreFunction.SIGMOID).groups(8, 4).scale(2.5f).build(),
      RouterConfig.builder(600, 40).build(),
      RouterConfig.builder(2048, 16).preSoftmax(true).build(),
    };
    for (RouterConfig config : configs) {
      for (int tokens : config.experts() >= 2048 ? new int[] {4099} : new int[] {20000, 20001}) {
        try (MoeRouter gpu = MoeRouter.create(config, UNDER_TEST); MoeRouter cpu = MoeRouter.create(config, Backend.CPU)) {
          String what = config + " T=" + tokens;
          float[] f = randomLogits(rnd, tokens, config.experts(), 1);
          short[] bf = toBf16(f);
          int[] rep = TestData.randomSelection(rnd, tokens, config.topK(), config.experts());
          byte[] mask = new byte[tokens];
          for (int t = 0; t < tokens; t++) mask[t] = (byte) (rnd.nextInt(4) == 0 ? 0 : 1);
          float[] dw = new float[tokens * config.topK()];
          for (int i = 0; i < dw.length; i++) dw[i] = (float) rnd.nextGaussian();
          compareWithCpu(what + " live", cpu, gpu, f, null, LogitsType.FP32, tokens, null, null);
          compareWithCpu(what + " live bf16", cpu, gpu, null, bf, LogitsType.BF16, tokens, null, null);
          compareWithCpu(what + " replay+mask", cpu, gpu, f, null, LogitsType.FP32, tokens, rep, mask);
          compareBackward(what + " backward", cpu, gpu, f, null, LogitsType.FP32, tokens, rep, dw);
        }
      }
    }
  }

  // ------------------------------------------------------------------------------------ concurrency

  /**
   * Threads share one router: host-staged calls and device-pointer calls on their own streams, some
   * of them rejected; every valid call equals the CPU, rejected ones write nothing, and checkReplay
   * then reports the lowest bad row once.
   */
  @Test
  void threadsShareOneRouter() throws Exception {
    RouterConfig config = RouterConfig.builder(128, 8).build();
    int tokens = 500, k = 8, threads = 4;
    Random rnd = new Random(44);
    float[] f = randomLogits(rnd, tokens, 128, 0);
    int[] rep = TestData.randomSelection(rnd, tokens, k, 128);
    int[] bad = rep.clone();
    bad[123 * k + 7] = bad[123 * k];
    try (MoeRouter gpu = MoeRouter.create(config, UNDER_TEST); MoeRouter cpu = MoeRouter.create(config, Backend.CPU)) {
      int[] ci = new int[tokens * k];
      float[] cw = new float[tokens * k];
      cpu.replay(f, tokens, rep, null, ci, cw);
      boolean device = UNDER_TEST == Backend.CUDA;
      List<Throwable> errors = java.util.Collections.synchronizedList(new java.util.ArrayList<>());
      List<Thread> pool = new java.util.ArrayList<>();
      for (int th = 0; th < threads; th++) {
        final int id = th;
        pool.add(new Thread(() -> {
          try (CudaMemory mem = device ? new CudaMemory() : null) {
            long stream = device ? mem.stream() : 0;
            long dLogits = device ? mem.upload(f) : 0, dRep = device ? mem.upload(rep) : 0, dBad = device ? mem.upload(bad) : 0;
            for (int i = 0; i < 6; i++) {
              String what = "thread " + id + " call " + i;
              if (!device || (i + id) % 2 == 0) {
                int[] gi = filled(tokens * k, -7);
                float[] gw = filled(tokens * k, Float.NaN);
                gpu.replay(f, tokens, rep, null, gi, gw);
                assertArrayEquals(ci, gi, what + " (host)");
                for (int j = 0; j < gw.length; j++) assertSameBits(cw[j], gw[j], what + " (host) weight " + j);
              } else {
                boolean rejected = i % 3 == 0;
                long dIdx = mem.poisoned(4L * tokens * k), dW = mem.poisoned(4L * tokens * k);
                gpu.routeDevice(dLogits, LogitsType.FP32, tokens, rejected ? dBad : dRep, 0, dIdx, dW, 0, stream);
                CudaMemory.sync(stream);
                int[] gi = mem.ints(dIdx, tokens * k);
                if (rejected) assertTrue(Arrays.stream(gi).allMatch(v -> v == -1), what + ": rejected call wrote");
                else assertArrayEquals(ci, gi, what + " (device)");
              }
            }
          } catch (Throwable t) {
            errors.add(t);
          }
        }));
      }
      for (Thread t : pool) t.start();
      for (Thread t : pool) t.join();
      if (!errors.isEmpty()) throw new AssertionError(errors.size() + " thread(s) failed", errors.get(0));
      if (device) {
        MoeRouterException ex = assertThrows(MoeRouterException.class, gpu::checkReplay);
        assertTrue(ex.getMessage().contains("row 123"), ex.getMessage());
      }
      gpu.checkReplay();
    }
  }

  private static void requireCudaBackend() {
    Assumptions.assumeTrue(UNDER_TEST == Backend.CUDA, "device pointers need the CUDA backend (under test: " + UNDER_TEST + ")");
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
    for (int i = 0; i < n; i++) assertSameBits(cw[i], gw[i], what + ": weight " + i + " CUDA vs CPU");
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
    for (int i = 0; i < n; i++) assertSameBits(cg[i], gg[i], what + ": grad " + i + " CUDA vs CPU");
  }

  // CUDA equals the CPU backend bit for bit; NaN matches NaN (payloads are not part of the contract).
  private static void assertSameBits(float expected, float actual, String what) {
    if (Float.floatToIntBits(expected) == Float.floatToIntBits(actual)) return;
    fail(what + ": expected " + expected + " (bits " + Integer.toHexString(Float.floatToRawIntBits(expected))
        + "), got " + actual + " (bits " + Integer.toHexString(Float.floatToRawIntBits(actual)) + ")");
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
