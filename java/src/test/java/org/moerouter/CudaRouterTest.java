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
import org.moerouter.replay.LayerKey;
import org.moerouter.replay.ReplayAction;
import org.moerouter.replay.ReplayRegistry;
import org.moerouter.replay.RouterReplay;

/**
 * CUDA backend against the native CPU backend (bit for bit: indices, weights, per-row non-finite flags
 * and gradients) and the float64 goldens and goldens_v2 (indices exact, weights and gradients within
 * 1e-5 relative, goldens_v2 1e-5 norm-relative, row flags exact, non-finite ERROR rejections naming the
 * expected rows), through the host-staged and the device-pointer calls, for every routing option. Tagged {@code gpu} (select them with {@code --include-tag gpu}).
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
      compareBackward(name, cpu, gpu, logits, null, LogitsType.FP32, tokens, replayIdx, dw, null);

      // the same rows as bf16 (ties become common): CUDA == CPU
      short[] bf = toBf16(logits);
      compareWithCpu(name + " live bf16", cpu, gpu, null, bf, LogitsType.BF16, tokens, null, null);
      compareWithCpu(name + " replay bf16", cpu, gpu, null, bf, LogitsType.BF16, tokens, replayIdx, null);
      compareBackward(name + " bf16", cpu, gpu, null, bf, LogitsType.BF16, tokens, liveIdx, dw, null);
      // and as fp16
      short[] h = toF16(logits);
      compareWithCpu(name + " live fp16", cpu, gpu, null, h, LogitsType.FP16, tokens, null, null);
      compareWithCpu(name + " replay fp16", cpu, gpu, null, h, LogitsType.FP16, tokens, replayIdx, null);
      compareBackward(name + " fp16", cpu, gpu, null, h, LogitsType.FP16, tokens, replayIdx, dw, null);
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
      // routing semantics v2 (spec sections 1-5); ERROR routers are in goldensV2 and nonFiniteErrorOnTheDevice
      RouterConfig.builder(64, 6).scoreFunction(ScoreFunction.SQRTSOFTPLUS).build(),
      RouterConfig.builder(256, 8).scoreFunction(ScoreFunction.SQRTSOFTPLUS).expertBias(bias256).groups(8, 4)
          .groupScore(GroupScore.TOP2_SUM).build(),
      RouterConfig.builder(96, 8).preSoftmax(true).expertBias(bias96).normalize(true).groups(8, 3)
          .groupScore(GroupScore.MAX).build(),
      RouterConfig.builder(48, 8).scoreFunction(ScoreFunction.SIGMOID).normalize(false).scale(2f).build(),
      RouterConfig.builder(64, 7).groups(8, 2).build(),
      RouterConfig.builder(600, 40).preSoftmax(true).normalize(true).nonFinite(NonFinitePolicy.ZERO).build(),
      RouterConfig.builder(33, 33).scoreFunction(ScoreFunction.SQRTSOFTPLUS).nonFinite(NonFinitePolicy.ZERO)
          .minusOneRows(MinusOneRows.ARANGE).build(),
      RouterConfig.builder(64, 6).nonFinite(NonFinitePolicy.ZERO).minusOneRows(MinusOneRows.LIVE).build(),
      RouterConfig.builder(700, 8).preSoftmax(true).minusOneRows(MinusOneRows.ARANGE).build(),
    };
  }

  /** Replay rows of -1 (about one in five) for routers that accept them. */
  private static int[] withPaddingRows(Random rnd, RouterConfig config, int[] rep) {
    if (config.minusOneRows() == MinusOneRows.REJECT) return rep;
    int k = config.topK();
    int[] out = rep.clone();
    for (int t = 0; t < out.length / k; t++)
      if (rnd.nextInt(5) == 0) Arrays.fill(out, t * k, t * k + k, -1);
    return out;
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
            int[] rep = withPaddingRows(rnd, config,
                TestData.randomSelection(rnd, tokens, config.topK(), config.experts()));
            byte[] mask = new byte[tokens];
            for (int t = 0; t < tokens; t++) mask[t] = (byte) (rnd.nextInt(3) == 0 ? 0 : 1);
            float[] dw = new float[tokens * config.topK()];
            for (int i = 0; i < dw.length; i++) dw[i] = (float) rnd.nextGaussian();
            float[] f32 = type == LogitsType.FP32 ? f : null;
            short[] half = type == LogitsType.BF16 ? toBf16(f) : type == LogitsType.FP16 ? toF16(f) : null;
            byte[] liveFlags = compareWithCpu(what + " live", cpu, gpu, f32, half, type, tokens, null, null);
            compareWithCpu(what + " replay", cpu, gpu, f32, half, type, tokens, rep, null);
            compareWithCpu(what + " replay+mask", cpu, gpu, f32, half, type, tokens, rep, mask);
            int[] replayed = new int[tokens * config.topK()];
            float[] w = new float[replayed.length];
            byte[] replayFlags = new byte[tokens];
            route(cpu, f32, half, type, tokens, rep, null, replayed, w, replayFlags);  // -1 rows resolved
            compareBackward(what + " backward(replay)", cpu, gpu, f32, half, type, tokens, replayed, dw, replayFlags);
            int[] live = new int[tokens * config.topK()];
            route(cpu, f32, half, type, tokens, null, null, live, w);
            compareBackward(what + " backward(live)", cpu, gpu, f32, half, type, tokens, live, dw, liveFlags);
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
        gpu.backward(f, tokens, idx, new float[tokens * k], new byte[tokens], g);
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
          compareBackward(what + " backward", cpu, gpu, f, null, LogitsType.FP32, tokens, rep, dw, null);
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

  // ------------------------------------------------------------------------------------ goldens_v2

  private static List<GoldensV2.Case> goldensV2Cases() {
    try {
      return GoldensV2.all();
    } catch (IllegalStateException e) {
      if (REQUIRE_GPU) fail(e.getMessage());
      Assumptions.abort(e.getMessage());
      return List.of();
    }
  }

  /**
   * Every goldens_v2 case through the host-staged calls: the golden (GoldenV2Test's rules) in fp32 and,
   * for bf16 cases, bf16; the CPU backend bit for bit in every dtype; ERROR cases rejected naming the
   * expected rows with nothing written.
   */
  @Test
  void goldensV2() {
    for (GoldensV2.Case c : goldensV2Cases()) {
      int t = c.tokens, k = c.config.topK(), e = c.config.experts();
      try (MoeRouter gpu = MoeRouter.create(c.config, UNDER_TEST); MoeRouter cpu = MoeRouter.create(c.config, Backend.CPU)) {
        if (c.error()) {
          int[] idx = filled(t * k, -7);
          float[] w = filled(t * k, -7f);
          byte[] rows = new byte[t];
          Arrays.fill(rows, (byte) 7);
          GoldenV2Test.expectRow(() -> GoldenV2Test.forward(gpu, c, LogitsType.FP32, null, idx, w, rows), c.errorRowLive,
              "route");
          GoldenV2Test.expectRow(() -> GoldenV2Test.forward(gpu, c, LogitsType.FP32, c.replayIdx, idx, w, rows),
              c.errorRowReplay, "replay");
          float[] g = filled(t * e, -7f);
          GoldenV2Test.expectRow(() -> GoldenV2Test.backward(gpu, c, LogitsType.FP32, c.replayIdx, null, g),
              c.errorRowReplay, "backward");
          assertTrue(Arrays.stream(idx).allMatch(v -> v == -7), c.name + ": a rejected call wrote indices");
          for (int i = 0; i < w.length; i++) assertEquals(-7f, w[i], c.name + ": a rejected call wrote weight " + i);
          for (int i = 0; i < t; i++) assertEquals(7, rows[i], c.name + ": a rejected call wrote row flag " + i);
          for (int i = 0; i < g.length; i++) assertEquals(-7f, g[i], c.name + ": a rejected backward wrote " + i);
          continue;
        }
        for (LogitsType type : c.bf16 ? new LogitsType[] {LogitsType.FP32, LogitsType.BF16} : new LogitsType[] {LogitsType.FP32}) {
          String what = c.name + " " + type;
          int[] idx = new int[t * k];
          float[] w = new float[t * k];
          byte[] rows = new byte[t];
          float[] g = filled(t * e, Float.NaN);
          long nf = GoldenV2Test.forward(gpu, c, type, null, idx, w, rows);
          GoldenV2Test.assertIndices(what + " live indices", c.liveIdx, idx, k);
          GoldenV2Test.assertNormClose(what + " live weights", w, c.liveWeights);
          GoldenV2Test.assertRows(what + " live non-finite rows", c.liveNonfiniteRows, rows, nf, c);
          GoldenV2Test.backward(gpu, c, type, idx, rows, g);
          GoldenV2Test.assertNormClose(what + " live grad logits", g, c.liveGradLogits);
          nf = GoldenV2Test.forward(gpu, c, type, c.replayIdx, idx, w, rows);
          assertArrayEquals(c.replayIdx, idx, what + ": replay keeps the given experts");
          GoldenV2Test.assertNormClose(what + " replay weights", w, c.replayWeights);
          GoldenV2Test.assertRows(what + " replay non-finite rows", c.replayNonfiniteRows, rows, nf, c);
          Arrays.fill(g, Float.NaN);
          GoldenV2Test.backward(gpu, c, type, c.replayIdx, rows, g);
          GoldenV2Test.assertNormClose(what + " replay grad logits", g, c.replayGradLogits);
        }
        for (LogitsType type : LogitsType.values()) {
          float[] f32 = type == LogitsType.FP32 ? c.logits : null;
          short[] half = type == LogitsType.BF16 ? toBf16(c.logits) : type == LogitsType.FP16 ? toF16(c.logits) : null;
          String what = c.name + " " + type;
          byte[] liveFlags = compareWithCpu(what + " live", cpu, gpu, f32, half, type, t, null, null);
          byte[] replayFlags = compareWithCpu(what + " replay", cpu, gpu, f32, half, type, t, c.replayIdx, null);
          int[] live = new int[t * k];
          route(cpu, f32, half, type, t, null, null, live, new float[t * k]);
          compareBackward(what + " backward(live)", cpu, gpu, f32, half, type, t, live, c.gradWeights, liveFlags);
          compareBackward(what + " backward(replay)", cpu, gpu, f32, half, type, t, c.replayIdx, c.gradWeights,
              replayFlags);
        }
        gpu.checkReplay();
      }
    }
  }

  /**
   * Every goldens_v2 case through routeDevice/backwardDevice with device row flags, fp32/bf16/fp16, CUDA
   * vs CPU bit for bit (and vs the golden in fp32); ERROR cases are rejected on the device (nothing
   * written) and reported by checkReplay naming the expected row.
   */
  @Test
  void goldensV2ThroughDevicePointers() {
    requireCudaBackend();
    List<GoldensV2.Case> cases = goldensV2Cases();
    try (CudaMemory mem = new CudaMemory()) {
      long stream = mem.stream();
      for (GoldensV2.Case c : cases) {
        int t = c.tokens, k = c.config.topK(), e = c.config.experts();
        try (MoeRouter gpu = MoeRouter.create(c.config, Backend.CUDA);
            MoeRouter cpu = MoeRouter.create(c.config, Backend.CPU)) {
          for (LogitsType type : LogitsType.values()) {
            String what = c.name + " " + type + " device";
            short[] half = type == LogitsType.BF16 ? toBf16(c.logits) : type == LogitsType.FP16 ? toF16(c.logits) : null;
            long dLogits = half == null ? mem.upload(c.logits) : mem.upload(half);
            long dRep = mem.upload(c.replayIdx), dDw = mem.upload(c.gradWeights);
            for (int replay = 0; replay < 2; replay++) {
              String w = what + (replay == 1 ? " replay" : " live");
              int[] rep = replay == 1 ? c.replayIdx : null;
              long dIdx = mem.poisoned(4L * t * k), dW = mem.poisoned(4L * t * k), dFlags = mem.poisoned(t);
              long dNf = mem.poisoned(8);
              gpu.routeDevice(dLogits, type, t, replay == 1 ? dRep : 0, 0, dIdx, dW, dFlags, dNf, stream);
              CudaMemory.sync(stream);
              int[] ci = new int[t * k];
              float[] cw = new float[t * k];
              byte[] cf = new byte[t];
              if (c.error() && type == LogitsType.FP32) {
                MoeRouterException ex = assertThrows(MoeRouterException.class, gpu::checkReplay, w);
                assertEquals(Status.NONFINITE, ex.status(), ex.getMessage());
                int row = replay == 1 ? c.errorRowReplay : c.errorRowLive;
                assertTrue(ex.getMessage().contains(": row " + row + ": the logit of expert "), ex.getMessage());
                assertTrue(Arrays.stream(mem.ints(dIdx, t * k)).allMatch(v -> v == -1), w + ": rejected call wrote");
                for (byte v : mem.bytes(dFlags, t)) assertEquals(-1, v, w + ": rejected call wrote row flags");
                continue;
              }
              if (c.error()) {  // half precision may round differently, but CUDA and the CPU agree
                MoeRouterException cex = null;
                try {
                  route(cpu, null, half, type, t, rep, null, ci, cw, cf);
                } catch (MoeRouterException ex) {
                  cex = ex;
                }
                if (cex != null) {
                  MoeRouterException ex = assertThrows(MoeRouterException.class, gpu::checkReplay, w);
                  assertEquals(cex.status(), ex.status(), ex.getMessage());
                  continue;
                }
              } else {
                route(cpu, half == null ? c.logits : null, half, type, t, rep, null, ci, cw, cf);
              }
              gpu.checkReplay();
              int[] gi = mem.ints(dIdx, t * k);
              float[] gw = mem.floats(dW, t * k);
              assertArrayEquals(ci, gi, w + ": indices CUDA vs CPU");
              for (int i = 0; i < gw.length; i++) assertSameBits(cw[i], gw[i], w + ": weight " + i);
              assertArrayEquals(cf, mem.bytes(dFlags, t), w + ": row flags CUDA vs CPU");
              if (type == LogitsType.FP32) {
                GoldenV2Test.assertIndices(w + " indices vs golden", replay == 1 ? c.replayIdx : c.liveIdx, gi, k);
                GoldenV2Test.assertNormClose(w + " weights vs golden", gw, replay == 1 ? c.replayWeights : c.liveWeights);
              }
              float[] cg = new float[t * e];
              if (half == null) cpu.backward(c.logits, t, ci, c.gradWeights, cf, cg);
              else cpu.backward(half, type, t, ci, c.gradWeights, cf, cg);
              long dGrad = mem.poisoned(4L * t * e);
              gpu.backwardDevice(dLogits, type, t, dIdx, dDw, dFlags, dGrad, stream);
              CudaMemory.sync(stream);
              gpu.checkReplay();
              float[] gg = mem.floats(dGrad, t * e);
              for (int i = 0; i < gg.length; i++) assertSameBits(cg[i], gg[i], w + " backward: grad " + i);
            }
          }
          gpu.checkReplay();
        }
      }
    }
  }

  /** RoutingResult from a CUDA router carries the per-row flags, equal to the CPU's. */
  @Test
  void routingResultsCarryRowFlags() {
    RouterConfig config = RouterConfig.builder(64, 4).scoreFunction(ScoreFunction.SIGMOID)
        .nonFinite(NonFinitePolicy.ZERO).build();
    Random rnd = new Random(61);
    int tokens = 100;
    float[] f = randomLogits(rnd, tokens, 64, 2);
    int[] rep = TestData.randomSelection(rnd, tokens, 4, 64);
    try (MoeRouter gpu = MoeRouter.create(config, UNDER_TEST); MoeRouter cpu = MoeRouter.create(config, Backend.CPU)) {
      RoutingResult g = gpu.route(f, tokens), c = cpu.route(f, tokens);
      assertTrue(g.nonfiniteRows() > 0, "the inputs hold non-finite rows");
      assertArrayEquals(c.nonfiniteRowFlags(), g.nonfiniteRowFlags(), "live row flags");
      g = gpu.replay(f, tokens, rep, null);
      c = cpu.replay(f, tokens, rep, null);
      assertArrayEquals(c.nonfiniteRowFlags(), g.nonfiniteRowFlags(), "replay row flags");
      assertEquals(c.nonfiniteRows(), g.nonfiniteRows());
    }
  }

  /**
   * Non-finite policy ERROR on the device: the call writes nothing and checkReplay reports the first row
   * read (its expert and value); an invalid replay row enqueued beside it is reported first.
   */
  @Test
  void nonFiniteErrorOnTheDevice() {
    requireCudaBackend();
    RouterConfig config = RouterConfig.builder(64, 6).nonFinite(NonFinitePolicy.ERROR).build();
    int tokens = 300, k = 6;
    Random rnd = new Random(62);
    float[] f = randomLogits(rnd, tokens, 64, 0);
    f[77 * 64 + 5] = Float.POSITIVE_INFINITY;
    f[150 * 64 + 9] = Float.NaN;
    int[] rep = TestData.randomSelection(rnd, tokens, k, 64);
    int[] bad = rep.clone();
    bad[200 * k + 3] = bad[200 * k];
    try (CudaMemory mem = new CudaMemory(); MoeRouter gpu = MoeRouter.create(config, Backend.CUDA)) {
      long stream = mem.stream(), dLogits = mem.upload(f);
      long dIdx = mem.poisoned(4L * tokens * k), dW = mem.poisoned(4L * tokens * k);
      gpu.routeDevice(dLogits, LogitsType.FP32, tokens, 0, 0, dIdx, dW, 0, stream);
      CudaMemory.sync(stream);
      assertTrue(Arrays.stream(mem.ints(dIdx, tokens * k)).allMatch(v -> v == -1), "rejected call wrote indices");
      MoeRouterException ex = assertThrows(MoeRouterException.class, gpu::checkReplay);
      assertEquals(Status.NONFINITE, ex.status());
      assertTrue(ex.getMessage().contains("row 77: the logit of expert 5 is +inf"), ex.getMessage());
      gpu.checkReplay();
      gpu.routeDevice(dLogits, LogitsType.FP32, tokens, 0, 0, dIdx, dW, 0, stream);
      gpu.routeDevice(dLogits, LogitsType.FP32, tokens, mem.upload(bad), 0, dIdx, dW, 0, stream);
      CudaMemory.sync(stream);
      ex = assertThrows(MoeRouterException.class, gpu::checkReplay);
      assertEquals(Status.INVALID_REPLAY, ex.status(), "invalid rows first, as the CPU checks indices first");
      gpu.checkReplay();
    }
  }

  /**
   * Replay bookkeeping with device targets holding rows of -1: the registry's policy LIVE or ARANGE
   * applied by a router with the same policy gives the CPU's result of the same rows.
   */
  @Test
  void deviceTargetsWithPaddingRows() {
    requireCudaBackend();
    for (MinusOneRows policy : new MinusOneRows[] {MinusOneRows.LIVE, MinusOneRows.ARANGE}) {
      RouterConfig config = RouterConfig.builder(64, 6).minusOneRows(policy).build();
      Random rnd = new Random(63);
      int tokens = 200, k = 6;
      float[] f = randomLogits(rnd, tokens, 64, 0);
      int[] rep = withPaddingRows(rnd, config, TestData.randomSelection(rnd, tokens, k, 64));
      try (CudaMemory mem = new CudaMemory(); MoeRouter gpu = MoeRouter.create(config, Backend.CUDA);
          MoeRouter cpu = MoeRouter.create(config, Backend.CPU)) {
        ReplayRegistry reg = ReplayRegistry.builder().minusOneRows(policy).build();
        RouterReplay layer = reg.addLayer(LayerKey.decoder(0), config);
        layer.setAction(ReplayAction.REPLAY_FORWARD);
        long stream = mem.stream();
        layer.setTargetIndicesDevice(mem.upload(rep), 0, tokens);
        long dIdx = mem.poisoned(4L * tokens * k), dW = mem.poisoned(4L * tokens * k);
        layer.routeDevice(gpu, mem.upload(f), LogitsType.FP32, tokens, dIdx, dW, 0, stream);
        CudaMemory.sync(stream);
        gpu.checkReplay();
        int[] ci = new int[tokens * k];
        float[] cw = new float[tokens * k];
        cpu.replay(f, tokens, rep, null, ci, cw);
        assertArrayEquals(ci, mem.ints(dIdx, tokens * k), policy + ": indices");
        float[] gw = mem.floats(dW, tokens * k);
        for (int i = 0; i < gw.length; i++) assertSameBits(cw[i], gw[i], policy + ": weight " + i);
      }
    }
  }

  /**
   * RECORD on the device under ZERO: the recording holds the live indices and the outputs are the live
   * routing's (rows flagged by a NaN outside their selected experts get zero weights), as on the CPU.
   */
  @Test
  void deviceRecordingUnderZeroKeepsTheLiveWeights() {
    requireCudaBackend();
    RouterConfig config = RouterConfig.builder(64, 4).scoreFunction(ScoreFunction.SIGMOID)
        .nonFinite(NonFinitePolicy.ZERO).build();
    int tokens = 200, k = 4;
    Random rnd = new Random(64);
    float[] f = randomLogits(rnd, tokens, 64, 2);
    try (CudaMemory mem = new CudaMemory(); MoeRouter gpu = MoeRouter.create(config, Backend.CUDA);
        MoeRouter cpu = MoeRouter.create(config, Backend.CPU)) {
      ReplayRegistry reg = new ReplayRegistry();
      RouterReplay layer = reg.addLayer(LayerKey.decoder(0), config);
      layer.setAction(ReplayAction.RECORD);
      long stream = mem.stream(), dRecord = mem.poisoned(4L * tokens * k);
      layer.setRecordBufferDevice(dRecord, tokens);
      long dIdx = mem.poisoned(4L * tokens * k), dW = mem.poisoned(4L * tokens * k), dFlags = mem.poisoned(tokens);
      layer.routeDevice(gpu, mem.upload(f), LogitsType.FP32, tokens, dIdx, dW, dFlags, 0, stream);
      CudaMemory.sync(stream);
      gpu.checkReplay();
      int[] ci = new int[tokens * k];
      float[] cw = new float[tokens * k];
      byte[] cf = new byte[tokens];
      assertTrue(cpu.route(f, tokens, ci, cw, cf) > 0, "the inputs hold non-finite rows");
      assertArrayEquals(ci, mem.ints(dRecord, tokens * k), "recorded indices");
      assertArrayEquals(ci, mem.ints(dIdx, tokens * k), "output indices");
      assertArrayEquals(cf, mem.bytes(dFlags, tokens), "row flags");
      float[] gw = mem.floats(dW, tokens * k);
      for (int i = 0; i < gw.length; i++) assertSameBits(cw[i], gw[i], "weight " + i);
    }
  }

  /**
   * Spec section 6 through the device overloads (validTokensDevice, tokensPerExpert[Map]Device, lossesDevice,
   * dropTokensDevice) against the CPU router's host calls, bit for bit: padding, ZERO rows with a NaN, two
   * sequences, every loss with its gradient added onto the routing backward's, both drop policies.
   */
  @Test
  void sectionSixThroughDevicePointers() {
    requireCudaBackend();
    RouterConfig config = RouterConfig.builder(64, 6).scoreFunction(ScoreFunction.SIGMOID).nonFinite(NonFinitePolicy.ZERO).build();
    int tokens = 600, k = 6, e = 64;
    Random rnd = new Random(61);
    float[] f = randomLogits(rnd, tokens, e, 0);
    f[17 * e + 3] = Float.NaN;
    byte[] padding = new byte[tokens];
    for (int t = 0; t < tokens; t++) padding[t] = (byte) (rnd.nextInt(4) == 0 ? 1 : 0);
    double[] g = new double[e];
    for (int i = 0; i < e; i++) g[i] = rnd.nextInt(40);
    LossConfig losses = LossConfig.builder().auxLoss(1e-2f).seqAuxLoss(1e-3f, 300, SeqLayout.BS).globalAuxLoss(3e-3f)
        .zLoss(1e-3f).build();
    try (CudaMemory mem = new CudaMemory(); MoeRouter cpu = MoeRouter.create(config, Backend.CPU);
        MoeRouter gpu = MoeRouter.create(config, Backend.CUDA)) {
      long stream = mem.stream(), dLogits = mem.upload(f);
      byte[] valid = new byte[tokens];
      long n = cpu.validTokens(f, tokens, padding, valid);
      long dValid = mem.poisoned(tokens), dN = mem.poisoned(8);
      gpu.validTokensDevice(dLogits, LogitsType.FP32, tokens, mem.upload(padding), dValid, dN, stream);
      RoutingResult rr = cpu.route(f, tokens);
      int[] idx = rr.indices();
      float[] w = rr.weights();
      long dIdx = mem.upload(idx), dW = mem.upload(w), dCounts = mem.poisoned(4L * e);
      gpu.tokensPerExpertDevice(dIdx, dValid, tokens, dCounts, stream);
      CudaMemory.sync(stream);
      assertArrayEquals(valid, mem.bytes(dValid, tokens), "valid rows");
      assertEquals(n, mem.oneLong(dN), "N");
      assertArrayEquals(cpu.tokensPerExpert(idx, tokens, valid, new int[e]), mem.ints(dCounts, e), "valid counts");
      // losses, the gradient added onto a nonzero one
      float[] grad = new float[tokens * e];
      for (int i = 0; i < grad.length; i++) grad[i] = (float) rnd.nextGaussian();
      long dGrad = mem.upload(grad);
      LossValues hv = cpu.losses(f, tokens, valid, losses, g, 900.0, grad, new LossValues(e));
      long ws = mem.alloc(gpu.lossesWorkspaceBytes(tokens, losses, true));
      long dValues = mem.poisoned(40), dAux = mem.poisoned(4L * e);
      gpu.lossesDevice(dLogits, LogitsType.FP32, tokens, dValid, losses, mem.upload(g), 900.0, dValues, dAux, 0, 0,
          dGrad, ws, gpu.lossesWorkspaceBytes(tokens, losses, true), stream);
      CudaMemory.sync(stream);
      double[] dv = mem.doubles(dValues, 5);
      assertSameBits(hv.auxLoss(), dv[0], "aux loss");
      assertSameBits(hv.seqAuxLoss(), dv[1], "seq aux loss");
      assertSameBits(hv.globalAuxLoss(), dv[2], "global aux loss");
      assertSameBits(hv.zLoss(), dv[3], "z-loss");
      assertEquals(hv.validTokens(), Double.doubleToRawLongBits(dv[4]), "N");
      assertArrayEquals(hv.auxTokensPerExpert(), mem.ints(dAux, e), "aux counts");
      float[] dg = mem.floats(dGrad, tokens * e);
      for (int i = 0; i < dg.length; i++) assertSameBits(grad[i], dg[i], "loss gradient " + i);
      // dropping, both policies, with and without padding to capacity
      for (DropPolicy policy : DropPolicy.values())
        for (boolean pad : new boolean[] {false, true}) {
          TokenDropping drop = TokenDropping.of(0.8, policy, pad);
          byte[] map = new byte[tokens * e], kept = new byte[tokens * k];
          float[] probs = new float[tokens * e];
          int[] keptCounts = new int[e];
          long dropped = cpu.dropTokens(drop, idx, w, tokens, map, probs, kept, keptCounts);
          long dws = mem.alloc(gpu.dropTokensWorkspaceBytes(tokens, policy));
          long dMap = mem.poisoned((long) tokens * e), dProbs = mem.poisoned(4L * tokens * e);
          long dKept = mem.poisoned((long) tokens * k), dKeptCounts = mem.poisoned(4L * e), dDropped = mem.poisoned(8);
          gpu.dropTokensDevice(drop, dIdx, dW, tokens, dMap, dProbs, dKept, dKeptCounts, dDropped, dws,
              gpu.dropTokensWorkspaceBytes(tokens, policy), stream);
          long dMapCounts = mem.poisoned(4L * e);
          gpu.tokensPerExpertMapDevice(dMap, 0, tokens, dMapCounts, stream);
          CudaMemory.sync(stream);
          String what = policy + (pad ? " pad" : "");
          assertArrayEquals(map, mem.bytes(dMap, tokens * e), what + " map");
          assertArrayEquals(kept, mem.bytes(dKept, tokens * k), what + " kept");
          assertArrayEquals(keptCounts, mem.ints(dKeptCounts, e), what + " kept counts");
          assertEquals(dropped, mem.oneLong(dDropped), what + " dropped");
          assertArrayEquals(cpu.tokensPerExpert(map, tokens, null, new int[e]), mem.ints(dMapCounts, e), what + " counts");
          float[] dp = mem.floats(dProbs, tokens * e);
          for (int i = 0; i < dp.length; i++) assertSameBits(probs[i], dp[i], what + " prob " + i);
        }
      gpu.checkReplay();
    }
  }

  private static void assertSameBits(double want, double got, String what) {
    assertEquals(Double.doubleToRawLongBits(want), Double.doubleToRawLongBits(got), what + ": " + want + " vs " + got);
  }

  private static void requireCudaBackend() {
    Assumptions.assumeTrue(UNDER_TEST == Backend.CUDA, "device pointers need the CUDA backend (under test: " + UNDER_TEST + ")");
  }

  // ------------------------------------------------------------------------------------ helpers

  private static long route(MoeRouter r, float[] f32, short[] half, LogitsType type, int tokens, int[] rep,
      byte[] mask, int[] idx, float[] w) {
    return route(r, f32, half, type, tokens, rep, mask, idx, w, null);
  }

  private static long route(MoeRouter r, float[] f32, short[] half, LogitsType type, int tokens, int[] rep,
      byte[] mask, int[] idx, float[] w, byte[] flags) {
    if (rep == null) return f32 != null ? r.route(f32, tokens, idx, w, flags) : r.route(half, type, tokens, idx, w, flags);
    return f32 != null ? r.replay(f32, tokens, rep, mask, idx, w, flags)
        : r.replay(half, type, tokens, rep, mask, idx, w, flags);
  }

  /** Indices, weights, row flags and counts CUDA vs CPU; returns the CPU's row flags. */
  private static byte[] compareWithCpu(String what, MoeRouter cpu, MoeRouter gpu, float[] f32, short[] half,
      LogitsType type, int tokens, int[] rep, byte[] mask) {
    int n = tokens * cpu.config().topK();
    int[] ci = new int[n];
    float[] cw = new float[n];
    byte[] cf = new byte[tokens];
    int[] gi = filled(n, -7);
    float[] gw = filled(n, Float.NaN);
    byte[] gf = new byte[tokens];
    Arrays.fill(gf, (byte) 7);
    long cnf = route(cpu, f32, half, type, tokens, rep, mask, ci, cw, cf);
    long gnf = route(gpu, f32, half, type, tokens, rep, mask, gi, gw, gf);
    assertArrayEquals(ci, gi, what + ": indices CUDA vs CPU");
    assertEquals(cnf, gnf, what + ": non-finite rows CUDA vs CPU");
    assertArrayEquals(cf, gf, what + ": non-finite row flags CUDA vs CPU");
    for (int i = 0; i < n; i++) assertSameBits(cw[i], gw[i], what + ": weight " + i + " CUDA vs CPU");
    return cf;
  }

  /** Gradients CUDA vs CPU at idx, with the forward's row flags (null: none flagged). */
  private static void compareBackward(String what, MoeRouter cpu, MoeRouter gpu, float[] f32, short[] half,
      LogitsType type, int tokens, int[] idx, float[] dw, byte[] flags) {
    int n = tokens * cpu.config().experts();
    float[] cg = new float[n];
    float[] gg = filled(n, Float.NaN);
    byte[] rows = flags != null ? flags : new byte[tokens];
    if (f32 != null) {
      cpu.backward(f32, tokens, idx, dw, rows, cg);
      gpu.backward(f32, tokens, idx, dw, rows, gg);
    } else {
      cpu.backward(half, type, tokens, idx, dw, rows, cg);
      gpu.backward(half, type, tokens, idx, dw, rows, gg);
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
