// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * MoeRouter's public calls that PIT showed no test pinned down (docs/testing.md lists each mutant): every call
 * counts itself out (a call that did not would keep close() from ever freeing the router), every call checks
 * that the router is open and each of its array lengths, the device calls check tokens before saying they need
 * CUDA, and the Java backend's helpers reject and count what the native ones do.
 */
class ApiPitSurvivorsTest {
  static final int E = 8, K = 2, T = 3;
  static final RouterConfig CONFIG = RouterConfig.builder(E, K).scoreFunction(ScoreFunction.SIGMOID).build();

  /** The Java backend, counting how often its resources are freed. */
  static class FreeCountingRouter extends ForwardingRouter {
    int freed;

    FreeCountingRouter(RouterConfig c) {
      super(c);
    }

    @Override
    void freeResources() {
      freed++;
    }
  }

  static ByteBuffer direct(int bytes) {
    return ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder());
  }

  interface Call {
    void run(MoeRouter r) throws Throwable;
  }

  /** One call of every public instance method that takes the use counter, with valid arguments. */
  static Map<String, Call> everyCall() {
    float[] l = ReplayTest.logits(T, E, 3);
    short[] h = ApiContractTest.bf16(l);
    int[] ridx = {0, 1, 2, 3, 4, 5};
    int[] idx = new int[T * K];
    float[] w = new float[T * K];
    byte[] flags = new byte[T];
    float[] dw = new float[T * K];
    float[] grad = new float[T * E];
    byte[] map = new byte[T * E];
    int[] counts = new int[E];
    LossConfig lc = LossConfig.builder().auxLoss(0.1f).build();
    TokenDropping drop = TokenDropping.of(1.0, DropPolicy.POSITION, false);
    Map<String, Call> c = new LinkedHashMap<>();
    c.put("route", r -> r.route(l, T, idx, w));
    c.put("route flags", r -> r.route(l, T, idx, w, flags));
    c.put("route bf16", r -> r.route(h, LogitsType.BF16, T, idx, w));
    c.put("route bf16 flags", r -> r.route(h, LogitsType.BF16, T, idx, w, flags));
    c.put("route result", r -> r.route(l, T));
    c.put("replay", r -> r.replay(l, T, ridx, null, idx, w));
    c.put("replay flags", r -> r.replay(l, T, ridx, null, idx, w, flags));
    c.put("replay bf16", r -> r.replay(h, LogitsType.BF16, T, ridx, null, idx, w));
    c.put("replay bf16 flags", r -> r.replay(h, LogitsType.BF16, T, ridx, null, idx, w, flags));
    c.put("replay result", r -> r.replay(l, T, ridx, null));
    c.put("route buffers", r -> r.route(direct(4 * T * E).asFloatBuffer().put(l).flip(), LogitsType.FP32, T, null, null,
        direct(4 * T * K).asIntBuffer(), direct(4 * T * K).asFloatBuffer()));
    c.put("route buffers flags", r -> r.route(direct(4 * T * E).asFloatBuffer().put(l).flip(), LogitsType.FP32, T, null,
        null, direct(4 * T * K).asIntBuffer(), direct(4 * T * K).asFloatBuffer(), direct(T)));
    c.put("routeAddress", r -> r.routeAddress(0, LogitsType.FP32, 0, 0, 0, 0, 0));
    c.put("routeAddress flags", r -> r.routeAddress(0, LogitsType.FP32, 0, 0, 0, 0, 0, 0));
    c.put("backward", r -> r.backward(l, T, ridx, dw, grad));
    c.put("backward flags", r -> r.backward(l, T, ridx, dw, flags, grad));
    c.put("backward bf16", r -> r.backward(h, LogitsType.BF16, T, ridx, dw, grad));
    c.put("backward bf16 flags", r -> r.backward(h, LogitsType.BF16, T, ridx, dw, flags, grad));
    c.put("backwardAddress", r -> r.backwardAddress(0, LogitsType.FP32, 0, 0, 0, 0));
    c.put("backwardAddress flags", r -> r.backwardAddress(0, LogitsType.FP32, 0, 0, 0, 0, 0));
    c.put("tokensPerExpert", r -> r.tokensPerExpert(ridx, T, counts));
    c.put("tokensPerExpert valid", r -> r.tokensPerExpert(ridx, T, null, counts));
    c.put("tokensPerExpert map", r -> r.tokensPerExpert(map, T, null, counts));
    c.put("denseViews", r -> r.denseViews(ridx, w, T, map, grad));
    c.put("denseMapBits", r -> r.denseMapBits(ridx, T, new long[T]));
    c.put("auxLoss", r -> r.auxLoss(l, T, 0.1f, null, null, null, null));
    c.put("auxLoss bf16", r -> r.auxLoss(h, LogitsType.BF16, T, 0.1f, null, null, null, null));
    c.put("zLoss", r -> r.zLoss(l, T, 0.1f, null));
    c.put("zLoss bf16", r -> r.zLoss(h, LogitsType.BF16, T, 0.1f, null));
    c.put("validTokens", r -> r.validTokens(l, T, null, flags));
    c.put("validTokens bf16", r -> r.validTokens(h, LogitsType.BF16, T, null, flags));
    c.put("losses", r -> r.losses(l, T, null, lc, null, 0, null, new LossValues(E)));
    c.put("losses bf16", r -> r.losses(h, LogitsType.BF16, T, null, lc, null, 0, null, new LossValues(E)));
    c.put("dropTokens", r -> r.dropTokens(drop, ridx, w, T, null, null, null, null));
    c.put("updateExpertBias", r -> r.updateExpertBias(new int[E], 0.5f));
    c.put("expertBias", r -> r.expertBias());
    c.put("setExpertBias", r -> r.setExpertBias(new float[E]));
    // CUDA only: a JAVA router says so, after counting the call in.
    c.put("checkReplay", r -> r.checkReplay());  // a no-op off CUDA, but a counted call
    c.put("routeDevice", r -> r.routeDevice(0, LogitsType.FP32, 0, 0, 0, 0, 0, 0, 0));
    c.put("routeDevice flags", r -> r.routeDevice(0, LogitsType.FP32, 0, 0, 0, 0, 0, 0, 0, 0));
    c.put("backwardDevice", r -> r.backwardDevice(0, LogitsType.FP32, 0, 0, 0, 0, 0));
    c.put("backwardDevice flags", r -> r.backwardDevice(0, LogitsType.FP32, 0, 0, 0, 0, 0, 0));
    c.put("validTokensDevice", r -> r.validTokensDevice(0, LogitsType.FP32, 0, 0, 0, 0, 0));
    c.put("tokensPerExpertDevice", r -> r.tokensPerExpertDevice(0, 0, 0, 0, 0));
    c.put("tokensPerExpertMapDevice", r -> r.tokensPerExpertMapDevice(0, 0, 0, 0, 0));
    c.put("lossesWorkspaceBytes", r -> r.lossesWorkspaceBytes(0, lc, false));
    c.put("lossesDevice", r -> r.lossesDevice(0, LogitsType.FP32, 0, 0, lc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
    c.put("dropTokensWorkspaceBytes", r -> r.dropTokensWorkspaceBytes(0, DropPolicy.PROBS));
    c.put("dropTokensDevice", r -> r.dropTokensDevice(drop, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
    return c;
  }

  @Test
  void everyCallCountsItselfOutSoCloseFreesAndLaterCallsFail() throws Throwable {
    for (Map.Entry<String, Call> call : everyCall().entrySet()) {
      String what = call.getKey();
      FreeCountingRouter r = new FreeCountingRouter(CONFIG);
      assertFalse(r.isClosed(), what);
      try {
        call.getValue().run(r);
        assertFalse(what.contains("Device") || what.endsWith("WorkspaceBytes"), what + ": a JAVA router has no device");
      } catch (MoeRouterException x) {
        assertTrue(what.contains("Device") || what.endsWith("WorkspaceBytes"), what + ": " + x);
        assertEquals(Status.UNSUPPORTED, x.status(), what);
        assertEquals("device pointers need the CUDA backend (this router: JAVA)", x.getMessage(), what);
      }
      assertEquals(0, r.freed, what + ": nothing freed while open");
      r.close();
      assertTrue(r.isClosed(), what);
      assertEquals(1, r.freed, what + ": close() after the call frees at once");
      IllegalStateException x = assertThrows(IllegalStateException.class, () -> call.getValue().run(r), what);
      assertTrue(x.getMessage().endsWith(" failed: the router is closed (" + r + ")"), x.getMessage());
      r.close();
      assertEquals(1, r.freed, what + ": freed once");
    }
    assertTrue(new FreeCountingRouter(CONFIG).toString().startsWith("FreeCountingRouter{JAVA, RouterConfig{experts=8"));
  }

  @Test
  void aCloseDuringACallFreesWhenTheCallReturns() throws Exception {
    java.util.concurrent.CountDownLatch inside = new java.util.concurrent.CountDownLatch(1);
    java.util.concurrent.CountDownLatch go = new java.util.concurrent.CountDownLatch(1);
    FreeCountingRouter r = new FreeCountingRouter(CONFIG) {
      @Override
      void applyExpertBias(float[] bias) {
        inside.countDown();
        try {
          go.await();
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
        }
        super.applyExpertBias(bias);
      }
    };
    Thread t = new Thread(() -> r.setExpertBias(new float[E]));
    t.start();
    inside.await();
    r.close();
    assertTrue(r.isClosed());
    assertEquals(0, r.freed, "a call is in flight");
    go.countDown();
    t.join();
    assertEquals(1, r.freed, "the last call out frees");
  }

  static void invalid(String message, Executable call) {
    MoeRouterException x = assertThrows(MoeRouterException.class, call);
    assertEquals(Status.INVALID_ARGUMENT, x.status(), x.getMessage());
    assertTrue(x.getMessage().contains(message), () -> "'" + x.getMessage() + "' lacks '" + message + "'");
  }

  /** Each array of the section 6 calls one element short, and a negative token count: rejected, nothing written. */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void section6CallsCheckEveryLength(Backend backend) {
    float[] l = ReplayTest.logits(T, E, 3);
    short[] h = ApiContractTest.bf16(l);
    float[] s1 = new float[T * E - 1];
    byte[] m1 = new byte[T * E - 1];
    int[] idx = {0, 1, 2, 3, 4, 5};
    float[] w = new float[T * K];
    LossConfig lc = LossConfig.builder().auxLoss(0.1f).build();
    TokenDropping drop = TokenDropping.of(1.0, DropPolicy.POSITION, false);
    try (MoeRouter r = MoeRouter.create(CONFIG, backend);
        MoeRouter z = MoeRouter.create(CONFIG.toBuilder().nonFinite(NonFinitePolicy.ZERO).build(), backend)) {
      invalid("logits", () -> r.auxLoss(Arrays.copyOf(l, T * E - 1), T, 0.1f, null, null, null, null));
      invalid("outScores", () -> r.auxLoss(l, T, 0.1f, s1, null, null, null));
      invalid("outTopkMap", () -> r.auxLoss(l, T, 0.1f, null, m1, null, null));
      invalid("outCounts", () -> r.auxLoss(l, T, 0.1f, null, null, new int[E - 1], null));
      invalid("gradLogits", () -> r.auxLoss(l, T, 0.1f, null, null, null, s1));
      invalid("logits", () -> r.zLoss(Arrays.copyOf(l, T * E - 1), T, 0.1f, null));
      invalid("gradLogits", () -> r.zLoss(l, T, 0.1f, s1));
      invalid("tokens must be >= 0, got -1", () -> r.zLoss(l, -1, 0.1f, null));
      invalid("BF16 or FP16", () -> r.auxLoss(h, LogitsType.FP32, T, 0.1f, null, null, null, null));
      invalid("logits", () -> r.auxLoss(Arrays.copyOf(h, T * E - 1), LogitsType.BF16, T, 0.1f, null, null, null, null));
      invalid("BF16 or FP16", () -> r.zLoss(h, LogitsType.FP32, T, 0.1f, null));
      invalid("logits", () -> r.zLoss(Arrays.copyOf(h, T * E - 1), LogitsType.BF16, T, 0.1f, null));
      float[] lh = new float[T * E];
      for (int i = 0; i < lh.length; i++) lh[i] = JavaRouting.bf16ToFloat(h[i]);
      assertEquals(r.auxLoss(lh, T, 0.1f, null, null, null, null), r.auxLoss(h, LogitsType.BF16, T, 0.1f, null, null, null, null));
      assertEquals(r.zLoss(lh, T, 0.1f, null), r.zLoss(h, LogitsType.BF16, T, 0.1f, null));
      assertTrue(r.zLoss(h, LogitsType.BF16, T, 0.1f, null) > 0f);

      invalid("tokens must be >= 0, got -1", () -> r.validTokens(l, -1, null, new byte[T]));
      invalid("paddingMask", () -> r.validTokens(l, T, new byte[T - 1], new byte[T]));
      invalid("outValid", () -> r.validTokens(l, T, null, new byte[T - 1]));
      invalid("logits", () -> r.validTokens(Arrays.copyOf(l, T * E - 1), T, null, new byte[T]));
      invalid("logits", () -> r.validTokens(Arrays.copyOf(h, T * E - 1), LogitsType.BF16, T, null, new byte[T]));
      invalid("logits", () -> z.validTokens((float[]) null, T, null, new byte[T]));
      invalid("logits", () -> z.validTokens(Arrays.copyOf(l, T * E - 1), T, null, new byte[T]));
      invalid("logits", () -> r.validTokens(new float[0], T, null, new byte[T]));
      byte[] valid = new byte[T];
      assertEquals(T, r.validTokens((float[]) null, T, null, valid), "without ZERO the logits are not read");
      assertArrayEquals(new byte[] {1, 1, 1}, valid);
      invalid("BF16 or FP16", () -> r.validTokens(h, LogitsType.FP32, T, null, new byte[T]));

      invalid("tokens must be >= 0, got -1", () -> r.tokensPerExpert(idx, -1, null, new int[E]));
      invalid("validRows", () -> r.tokensPerExpert(idx, T, new byte[T - 1], new int[E]));
      invalid("idx", () -> r.tokensPerExpert(Arrays.copyOf(idx, T * K - 1), T, null, new int[E]));
      invalid("outCounts", () -> r.tokensPerExpert(idx, T, null, new int[E - 1]));
      invalid("tokens must be >= 0, got -1", () -> r.tokensPerExpert(new byte[T * E], -1, null, new int[E]));
      invalid("validRows", () -> r.tokensPerExpert(new byte[T * E], T, new byte[T - 1], new int[E]));
      invalid("map", () -> r.tokensPerExpert(m1, T, null, new int[E]));
      invalid("outCounts", () -> r.tokensPerExpert(new byte[T * E], T, null, new int[E - 1]));
      int[] cnt = new int[E];
      assertTrue(cnt == r.tokensPerExpert(new byte[T * E], T, null, cnt), "returns outCounts");
      assertTrue(cnt == r.tokensPerExpert(idx, T, new byte[] {1, 0, 1}, cnt), "returns outCounts");
      assertArrayEquals(new int[] {1, 1, 0, 0, 1, 1, 0, 0}, cnt);
      MoeRouterException range = assertThrows(MoeRouterException.class,
          () -> r.tokensPerExpert(new int[] {0, 1, 9, 2, 3, 4}, T, new byte[] {1, 1, 1}, new int[E]));
      assertEquals(Status.INVALID_REPLAY, range.status());
      assertTrue(range.getMessage().contains("row 1: expert 9 "), range.getMessage());

      invalid("tokens must be >= 0, got -1", () -> r.losses(l, -1, null, lc, null, 0, null, new LossValues(E)));
      invalid("logits", () -> r.losses(Arrays.copyOf(l, T * E - 1), T, null, lc, null, 0, null, new LossValues(E)));
      invalid("gradLogits", () -> r.losses(l, T, null, lc, null, 0, s1, new LossValues(E)));
      invalid("logits", () -> r.losses(Arrays.copyOf(h, T * E - 1), LogitsType.BF16, T, null, lc, null, 0, null,
          new LossValues(E)));
      invalid("BF16 or FP16", () -> r.losses(h, LogitsType.FP32, T, null, lc, null, 0, null, new LossValues(E)));

      invalid("tokens must be >= 0, got -1", () -> r.dropTokens(drop, idx, w, -1, null, null, null, null));
      invalid("idx", () -> r.dropTokens(drop, Arrays.copyOf(idx, T * K - 1), w, T, null, null, null, null));
      invalid("weights", () -> r.dropTokens(drop, idx, new float[T * K - 1], T, null, null, null, null));
      invalid("outMap", () -> r.dropTokens(drop, idx, w, T, m1, null, null, null));
      invalid("outKept", () -> r.dropTokens(drop, idx, w, T, null, null, new byte[T * K - 1], null));
      invalid("outKeptCounts", () -> r.dropTokens(drop, idx, w, T, null, null, null, new int[E - 1]));
      assertEquals(0, r.dropTokens(drop, idx, null, T, null, null, null, null), "POSITION needs no weights");

      invalid("tokens must be >= 0, got -1", () -> r.backward(l, -1, idx, w, new float[T * E]));
      invalid("logits", () -> r.backward(Arrays.copyOf(l, T * E - 1), T, idx, w, new float[T * E]));
      invalid("idx", () -> r.denseMapBits(Arrays.copyOf(idx, T * K - 1), T, new long[T]));
      invalid("outBits", () -> r.denseMapBits(idx, T, new long[T - 1]));
      invalid("tokensPerExpert", () -> r.updateExpertBias(new int[E - 1], 0.5f));
      // A ZERO router's backward needs the forward's flags, but not for 0 tokens.
      z.backwardAddress(0, LogitsType.FP32, 0, 0, 0, 0);
    }
  }

  /** Device calls on a host router check tokens (and a 0 map) first, then say they need CUDA. */
  @Test
  void deviceCallsCheckTokensFirst() {
    LossConfig lc = LossConfig.builder().auxLoss(0.1f).build();
    TokenDropping drop = TokenDropping.of(1.0, DropPolicy.POSITION, false);
    try (MoeRouter r = MoeRouter.create(CONFIG, Backend.JAVA)) {
      invalid("tokens must be >= 0, got -1", () -> r.validTokensDevice(8, LogitsType.FP32, -1, 0, 8, 8, 0));
      invalid("tokens must be >= 0, got -1", () -> r.tokensPerExpertDevice(8, 0, -1, 8, 0));
      invalid("tokens must be >= 0, got -1", () -> r.tokensPerExpertMapDevice(8, 0, -1, 8, 0));
      invalid("map must not be 0", () -> r.tokensPerExpertMapDevice(0, 0, 1, 8, 0));
      invalid("tokens must be >= 0, got -1", () -> r.lossesWorkspaceBytes(-1, lc, false));
      invalid("tokens must be >= 0, got -1", () -> r.lossesDevice(8, LogitsType.FP32, -1, 0, lc, 0, 0, 8, 0, 0, 0, 0, 8, 0, 0));
      invalid("tokens must be >= 0, got -1", () -> r.dropTokensWorkspaceBytes(-1, DropPolicy.PROBS));
      invalid("tokens must be >= 0, got -1", () -> r.dropTokensDevice(drop, 8, 8, -1, 8, 0, 0, 0, 8, 8, 8, 0));
      assertEquals(Status.UNSUPPORTED,
          assertThrows(MoeRouterException.class, () -> r.tokensPerExpertMapDevice(0, 0, 0, 8, 0)).status(), "0 tokens, 0 map");
      LossConfig glob = LossConfig.builder().globalAuxLoss(0.1f).build();
      invalid("global aux loss needs the global tokens per expert",
          () -> r.lossesDevice(8, LogitsType.FP32, 1, 0, glob, 0, 1, 8, 0, 0, 0, 0, 8, 8, 0));
      invalid("global num tokens must be finite and >= 0, got nan",
          () -> r.lossesDevice(8, LogitsType.FP32, 1, 0, glob, 8, Double.NaN, 8, 0, 0, 0, 0, 8, 8, 0));
      invalid("global num tokens must be finite and >= 0, got -1",
          () -> r.lossesDevice(8, LogitsType.FP32, 1, 0, glob, 8, -1, 8, 0, 0, 0, 0, 8, 8, 0));
    }
  }

  /** The Java helpers reject the rows the native ones reject; counts and bit maps of E > 64 (three 64-bit words). */
  @Test
  void javaHelpersMatchTheNativeOnes() {
    int e = 130, k = 3, t = 4;
    RouterConfig c = RouterConfig.builder(e, k).build();
    int[] idx = {0, 64, 129, 5, 127, 128, 63, 65, 1, 2, 3, 4};
    int[] bad = {0, 1, 2, 3, 130, 5, 6, 7, 8, 9, 10, 11};
    String[] msg = new String[2];
    long[][] bits = new long[2][];
    int[][] counts = new int[2][];
    int b = 0;
    for (Backend backend : Backends.host()) {
      try (MoeRouter r = MoeRouter.create(c, backend)) {
        MoeRouterException x = assertThrows(MoeRouterException.class, () -> r.tokensPerExpert(bad, t, new int[e]));
        assertEquals(Status.INVALID_REPLAY, x.status());
        msg[b] = x.getMessage();
        assertTrue(msg[b].startsWith("tokensPerExpert failed: "), msg[b]);
        assertTrue(msg[b].contains("row 1: expert 130 ") && msg[b].contains(" out of range [0, 130)"), msg[b]);
        bits[b] = new long[t * 3];
        Arrays.fill(bits[b], -1L);
        r.denseMapBits(idx, t, bits[b]);
        counts[b] = r.tokensPerExpert(idx, t, new int[e]);
      }
      b++;
    }
    // The texts differ in form (the native one comes from the C ABI's count check); both name row, expert and range.
    assertArrayEquals(bits[1], bits[0]);
    assertArrayEquals(counts[1], counts[0]);
    // Rows {0, 64, 129}, {5, 127, 128}, {63, 65, 1}, {2, 3, 4}: bit x % 64 of word x / 64; the stale -1s cleared.
    assertArrayEquals(new long[] {1L, 1L, 2L, 1L << 5, 1L << 63, 1L, (1L << 63) | 2L, 2L, 0L, 28L, 0L, 0L}, bits[0]);
  }

  @Test
  void availabilityIsConsistent() {
    assertNull(MoeRouter.unavailableReason(Backend.JAVA));
    assertNull(MoeRouter.unavailableReason(Backend.AUTO));
    for (Backend b : Backend.values()) assertEquals(MoeRouter.unavailableReason(b) == null, MoeRouter.isAvailable(b), b.toString());
    String cuda = MoeRouter.unavailableReason(Backend.CUDA);
    if (RouterNative.moe_cuda_compiled() == 0)
      assertTrue(cuda.startsWith("the native library has no CUDA kernels"), cuda);
    else if (RouterNative.moe_cuda_device_count() <= 0)
      assertEquals("no CUDA device is visible", cuda);
    else
      assertNull(cuda);
  }

  /** The 7-argument routeAddress returns the rows with non-finite logits, as the 8-argument one. */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void routeAddressCountsNonFiniteRows(Backend backend) {
    float[] l = ReplayTest.logits(T, E, 3);
    l[E + 2] = Float.NaN;
    try (MoeRouter r = MoeRouter.create(CONFIG, backend);
        org.bytedeco.javacpp.FloatPointer pl = new org.bytedeco.javacpp.FloatPointer(l);
        org.bytedeco.javacpp.IntPointer pi = new org.bytedeco.javacpp.IntPointer((long) T * K);
        org.bytedeco.javacpp.FloatPointer pw = new org.bytedeco.javacpp.FloatPointer((long) T * K);
        org.bytedeco.javacpp.IntPointer bad = new org.bytedeco.javacpp.IntPointer(new int[] {0, 1, 2, 2, 3, 4})) {
      assertEquals(1, r.routeAddress(pl.address(), LogitsType.FP32, T, 0, 0, pi.address(), pw.address()));
      MoeRouterException x = assertThrows(MoeRouterException.class,
          () -> r.routeAddress(pl.address(), LogitsType.FP32, T, bad.address(), 0, pi.address(), pw.address()));
      assertEquals(Status.INVALID_REPLAY, x.status());
    }
  }
}
