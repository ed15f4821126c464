// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.util.Arrays;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Every public overload of MoeRouter: the value it returns and the argument it rejects, with the rule
 * and the value in the message (PIT found overloads whose return value or whose checks no test looked
 * at: docs/testing.md).
 */
class ApiContractTest {
  static final int E = 8, K = 2, T = 3;
  static final RouterConfig CONFIG = RouterConfig.builder(E, K).build();

  /** Rows 0 and 2 hold a NaN, row 1 is finite: every call reads them and returns 2. */
  static float[] logits() {
    float[] l = new float[T * E];
    for (int i = 0; i < l.length; i++) l[i] = (i % 5) * 0.5f;
    l[3] = Float.NaN;
    l[2 * E + 6] = Float.NaN;
    return l;
  }

  static short[] bf16(float[] l) {
    short[] h = new short[l.length];
    for (int i = 0; i < l.length; i++) h[i] = (short) (Float.floatToRawIntBits(l[i]) >>> 16);
    return h;
  }

  static void invalid(String fragment, Executable call) {
    MoeRouterException e = assertThrows(MoeRouterException.class, call, fragment);
    assertEquals(Status.INVALID_ARGUMENT, e.status(), e.getMessage());
    assertTrue(e.getMessage().contains(fragment), "'" + e.getMessage() + "' lacks '" + fragment + "'");
  }

  static ByteBuffer direct(int bytes) {
    return ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder());
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void everyRoutingOverloadReturnsTheNonFiniteRowCount(Backend backend) {
    float[] l = logits();
    short[] h = bf16(l);
    int[] rep = {0, 3, 2, 3, 4, 5};
    try (MoeRouter r = MoeRouter.create(CONFIG, backend)) {
      int[] idx = new int[T * K];
      float[] w = new float[T * K];
      byte[] rows = new byte[T];
      assertEquals(2, r.route(l, T, idx, w));
      assertEquals(2, r.route(l, T, idx, w, rows));
      assertArrayEquals(new byte[] {1, 0, 1}, rows);
      assertEquals(2, r.route(h, LogitsType.BF16, T, idx, w));
      assertEquals(2, r.route(h, LogitsType.BF16, T, idx, w, rows));
      assertEquals(2, r.route(l, T).nonfiniteRows());
      // Replay reads only the replayed logits (softmax post).
      assertEquals(1, r.replay(l, T, rep, null, idx, w));
      assertEquals(1, r.replay(l, T, rep, null, idx, w, rows));
      assertArrayEquals(new byte[] {1, 0, 0}, rows, "row 0 replays expert 3 (NaN), row 2 experts 4 and 5 (finite)");
      assertEquals(1, r.replay(h, LogitsType.BF16, T, rep, null, idx, w));
      assertEquals(1, r.replay(h, LogitsType.BF16, T, rep, null, idx, w, rows));
      assertEquals(1, r.replay(l, T, rep, null).nonfiniteRows());
      FloatBuffer lb = direct(4 * l.length).asFloatBuffer().put(l).flip();
      IntBuffer ib = direct(4 * T * K).asIntBuffer();
      FloatBuffer wb = direct(4 * T * K).asFloatBuffer();
      assertEquals(2, r.route(lb, LogitsType.FP32, T, null, null, ib, wb));
      IntBuffer rb = direct(4 * T * K).asIntBuffer().put(rep).flip();
      assertEquals(1, r.route(lb, LogitsType.FP32, T, rb, null, ib, wb));
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void everyArrayOverloadChecksEveryArgument(Backend backend) {
    float[] l = logits();
    short[] h = bf16(l);
    int[] rep = {0, 1, 2, 3, 4, 5};
    int[] idx = new int[T * K];
    float[] w = new float[T * K];
    try (MoeRouter r = MoeRouter.create(CONFIG, backend)) {
      invalid("outNonfiniteRows holds 2 elements, needs 3", () -> r.route(l, T, idx, w, new byte[2]));
      invalid("logits holds 23 elements, needs 24", () -> r.route(Arrays.copyOf(h, 23),
          LogitsType.BF16, T, idx, w));
      invalid("short[] logits must be BF16 or FP16, got FP32", () -> r.route(h, LogitsType.FP32, T, idx, w, null));
      invalid("outWeights holds 5 elements, needs 6", () -> r.route(h, LogitsType.BF16, T, idx, new float[5], null));
      invalid("tokens must be >= 0, got -1", () -> r.route(l, -1));
      invalid("replayMask holds 2 elements, needs 3", () -> r.replay(l, T, rep, new byte[2], idx, w));
      invalid("replayIdx holds 5 elements, needs 6", () -> r.replay(l, T, Arrays.copyOf(rep, 5), null, idx, w, null));
      invalid("short[] logits must be BF16 or FP16, got FP32", () -> r.replay(h, LogitsType.FP32, T, rep, null, idx, w));
      invalid("outIdx holds 5 elements, needs 6", () -> r.replay(h, LogitsType.BF16, T, rep, null, new int[5], w, null));
      invalid("tokens must be >= 0, got -2", () -> r.replay(l, -2, rep, null));
      assertThrows(NullPointerException.class, () -> r.replay(l, T, null, null, idx, w));
      assertThrows(NullPointerException.class, () -> r.replay(h, LogitsType.BF16, T, null, null, idx, w));
      float[] g = new float[T * E];
      float[] dw = new float[T * K];
      invalid("gradWeights holds 5 elements, needs 6", () -> r.backward(l, T, rep, new float[5], g));
      invalid("nonfiniteRows holds 2 elements, needs 3", () -> r.backward(l, T, rep, dw, new byte[2], g));
      invalid("short[] logits must be BF16 or FP16, got FP32", () -> r.backward(h, LogitsType.FP32, T, rep, dw, g));
      invalid("gradLogits holds 23 elements, needs 24", () -> r.backward(h, LogitsType.BF16, T, rep, dw, null, new float[23]));
      invalid("idx holds 5 elements, needs 6", () -> r.backward(h, LogitsType.BF16, T, Arrays.copyOf(rep, 5), dw, g));
      invalid("idx holds 5 elements, needs 6", () -> r.tokensPerExpert(Arrays.copyOf(rep, 5), T, new int[E]));
      invalid("outCounts holds 7 elements, needs 8", () -> r.tokensPerExpert(rep, T, new int[7]));
      invalid("tokens must be >= 0, got -1", () -> r.tokensPerExpert(rep, -1, new int[E]));
      invalid("outMap holds 23 elements, needs 24", () -> r.denseViews(rep, w, T, new byte[23], null));
      invalid("outProbs holds 23 elements, needs 24", () -> r.denseViews(rep, w, T, null, new float[23]));
      invalid("weights holds 5 elements, needs 6", () -> r.denseViews(rep, new float[5], T, null, new float[24]));
      invalid("outBits holds 2 elements, needs 3", () -> r.denseMapBits(rep, T, new long[2]));
      invalid("tokens must be >= 0, got -1", () -> r.denseMapBits(rep, -1, new long[3]));
      // The helpers reject a bad selection, naming the row, and write nothing.
      int[] bad = {0, 1, 2, 2, 4, 5};
      int[] counts = new int[E];
      Arrays.fill(counts, 7);
      MoeRouterException e = assertThrows(MoeRouterException.class, () -> r.denseMapBits(bad, T, new long[3]));
      assertEquals(Status.INVALID_REPLAY, e.status());
      assertTrue(e.getMessage().contains("row 1: expert 2 appears twice"), e.getMessage());
      int[] outOfRange = {0, 1, 2, 8, 4, 5};
      e = assertThrows(MoeRouterException.class, () -> r.tokensPerExpert(outOfRange, T, counts));
      assertEquals(Status.INVALID_REPLAY, e.status());
      assertTrue(e.getMessage().contains("row 1"), e.getMessage());
      for (int c : counts) assertEquals(7, c, "a rejected call wrote counts");
      // Counts and dense views of a valid selection, every output written.
      assertArrayEquals(new int[] {1, 1, 1, 1, 1, 1, 0, 0}, r.tokensPerExpert(rep, T, counts));
      byte[] map = new byte[T * E];
      float[] probs = new float[T * E];
      long[] bits = new long[T];
      Arrays.fill(map, (byte) 9);
      Arrays.fill(probs, 9f);
      Arrays.fill(bits, -1L);
      float[] ws = {.25f, .75f, .5f, .5f, 1f, 0f};
      r.denseViews(rep, ws, T, map, probs);
      r.denseMapBits(rep, T, bits);
      for (int t = 0; t < T; t++)
        for (int x = 0; x < E; x++) {
          int j = rep[t * K] == x ? 0 : rep[t * K + 1] == x ? 1 : -1;
          assertEquals(j >= 0 ? 1 : 0, map[t * E + x], "map " + t + "," + x);
          assertEquals(j >= 0 ? ws[t * K + j] : 0f, probs[t * E + x], "probs " + t + "," + x);
          assertEquals(j >= 0 ? 1 : 0, (bits[t] >>> x) & 1, "bits " + t + "," + x);
        }
      assertArrayEquals(new long[] {0b11, 0b1100, 0b110000}, bits);
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void bufferAndAddressOverloadsCheckEveryArgument(Backend backend) {
    FloatBuffer l = direct(4 * T * E).asFloatBuffer();
    IntBuffer idx = direct(4 * T * K).asIntBuffer();
    FloatBuffer w = direct(4 * T * K).asFloatBuffer();
    IntBuffer rep = direct(4 * T * K).asIntBuffer();
    ByteBuffer mask = direct(T);
    try (MoeRouter r = MoeRouter.create(CONFIG, backend)) {
      invalid("tokens must be >= 0, got -1", () -> r.route(l, LogitsType.FP32, -1, null, null, idx, w));
      invalid("logits holds 24 elements, needs 32", () -> r.route(l, LogitsType.FP32, 4, null, null, idx, w));
      invalid("logits holds 12 elements, needs 24",
          () -> r.route(direct(2 * T * E), LogitsType.FP32, T, null, null, idx, w));
      invalid("logits buffer type DirectIntBuffer", () -> r.route(rep, LogitsType.FP32, T, null, null, idx, w));
      invalid("logits buffer type", () -> r.route(l, LogitsType.BF16, T, null, null, idx, w));
      invalid("outIdx holds 5 elements, needs 6", () -> r.route(l, LogitsType.FP32, T, null, null, idx.duplicate().position(1), w));
      invalid("outWeights holds 5 elements, needs 6", () -> r.route(l, LogitsType.FP32, T, null, null, idx, w.duplicate().position(1)));
      invalid("replayIdx holds 5 elements, needs 6", () -> r.route(l, LogitsType.FP32, T, rep.duplicate().position(1), null, idx, w));
      invalid("replayMask holds 2 elements, needs 3", () -> r.route(l, LogitsType.FP32, T, rep, mask.duplicate().position(1), idx, w));
      invalid("replayMask given without replayIdx", () -> r.route(l, LogitsType.FP32, T, null, mask, idx, w));
      invalid("outNonfiniteRows holds 2 elements, needs 3",
          () -> r.route(l, LogitsType.FP32, T, null, null, idx, w, mask.duplicate().position(1)));
      invalid("logits must be a direct buffer", () -> r.route(FloatBuffer.allocate(T * E), LogitsType.FP32, T, null, null, idx, w));
      invalid("replayIdx must be a direct buffer", () -> r.route(l, LogitsType.FP32, T, IntBuffer.allocate(T * K), null, idx, w));
      invalid("replayMask must be a direct buffer", () -> r.route(l, LogitsType.FP32, T, rep, ByteBuffer.allocate(T), idx, w));
      invalid("outIdx is a read-only buffer", () -> r.route(l, LogitsType.FP32, T, null, null, idx.asReadOnlyBuffer(), w));
      invalid("outWeights is a read-only buffer", () -> r.route(l, LogitsType.FP32, T, null, null, idx, w.asReadOnlyBuffer()));
      invalid("outNonfiniteRows is a read-only buffer",
          () -> r.route(l, LogitsType.FP32, T, null, null, idx, w, mask.asReadOnlyBuffer()));
      invalid("logits has byte order",
          () -> r.route(ByteBuffer.allocateDirect(4 * T * E).order(ByteOrder.BIG_ENDIAN), LogitsType.FP32, T, null, null, idx, w));

      invalid("tokens must be >= 0, got -1", () -> r.routeAddress(8, LogitsType.FP32, -1, 0, 0, 8, 8));
      invalid("logits and outputs must not be 0", () -> r.routeAddress(0, LogitsType.FP32, 1, 0, 0, 8, 8));
      invalid("logits and outputs must not be 0", () -> r.routeAddress(8, LogitsType.FP32, 1, 0, 0, 0, 8));
      invalid("logits and outputs must not be 0", () -> r.routeAddress(8, LogitsType.FP32, 1, 0, 0, 8, 0));
      invalid("replayMask given without replayIdx", () -> r.routeAddress(8, LogitsType.FP32, 1, 0, 8, 8, 8));
      assertEquals(0, r.routeAddress(0, LogitsType.FP32, 0, 0, 0, 0, 0), "T = 0 reads nothing");
      invalid("tokens must be >= 0, got -1", () -> r.backwardAddress(8, LogitsType.FP32, -1, 8, 8, 8));
      invalid("logits, indices and gradients must not be 0", () -> r.backwardAddress(0, LogitsType.FP32, 1, 8, 8, 8));
      invalid("logits, indices and gradients must not be 0", () -> r.backwardAddress(8, LogitsType.FP32, 1, 0, 8, 8));
      invalid("logits, indices and gradients must not be 0", () -> r.backwardAddress(8, LogitsType.FP32, 1, 8, 0, 8));
      invalid("logits, indices and gradients must not be 0", () -> r.backwardAddress(8, LogitsType.FP32, 1, 8, 8, 0));
      r.backwardAddress(0, LogitsType.FP32, 0, 0, 0, 0);
      assertThrows(NullPointerException.class, () -> r.routeAddress(8, null, 1, 0, 0, 8, 8));
      assertThrows(NullPointerException.class, () -> r.backwardAddress(8, null, 1, 8, 8, 8));
    }
    try (MoeRouter z = MoeRouter.create(CONFIG.toBuilder().nonFinite(NonFinitePolicy.ZERO).build(), backend)) {
      invalid("non-finite policy ZERO: backward needs the forward's non-finite row flags",
          () -> z.backwardAddress(8, LogitsType.FP32, 1, 8, 8, 8));
      invalid("non-finite policy ZERO", () -> z.backward(new float[E], 1, new int[] {0, 1}, new float[K], new float[E]));
      z.backward(new float[0], 0, new int[0], new float[0], new float[0]);  // T = 0 needs no flags
    }
  }
}
