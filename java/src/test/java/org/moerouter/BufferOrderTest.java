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
import java.nio.ShortBuffer;
import java.util.Arrays;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Direct buffers in either byte order: native order routes, the other is rejected before any write. */
class BufferOrderTest {
  static final ByteOrder NATIVE = ByteOrder.nativeOrder();
  static final ByteOrder OTHER = NATIVE == ByteOrder.LITTLE_ENDIAN ? ByteOrder.BIG_ENDIAN : ByteOrder.LITTLE_ENDIAN;
  static final RouterConfig CONFIG = MemoryPaths.CONFIG;
  static final int T = 9, E = CONFIG.experts(), K = CONFIG.topK();

  static ByteBuffer bytes(int n, ByteOrder order) {
    return ByteBuffer.allocateDirect(n).order(order);
  }

  /** One buffer set, each buffer in the order given for it, holding the same values. */
  static final class Buffers {
    final FloatBuffer logits;
    final ByteBuffer logitsBytes;
    final ShortBuffer logitsHalf;
    final IntBuffer replay;
    final ByteBuffer mask;
    final IntBuffer outIdx;
    final FloatBuffer outW;

    Buffers(float[] l, short[] half, int[] replayIdx, ByteOrder logitsOrder, ByteOrder replayOrder, ByteOrder idxOrder,
        ByteOrder wOrder) {
      logits = bytes(4 * l.length, logitsOrder).asFloatBuffer().put(l);
      logits.flip();
      logitsBytes = bytes(4 * l.length, logitsOrder);
      logitsBytes.asFloatBuffer().put(l);
      logitsHalf = bytes(2 * half.length, logitsOrder).asShortBuffer().put(half);
      logitsHalf.flip();
      replay = bytes(4 * replayIdx.length, replayOrder).asIntBuffer().put(replayIdx);
      replay.flip();
      mask = bytes(T, OTHER);  // bytes: order irrelevant, never rejected
      for (int i = 0; i < T; i++) mask.put(i, (byte) (i % 2));
      outIdx = bytes(4 * T * K, idxOrder).asIntBuffer();
      outW = bytes(4 * T * K, wOrder).asFloatBuffer();
      for (int i = 0; i < T * K; i++) {
        outIdx.put(i, -7);
        outW.put(i, -7f);
      }
    }

    void assertUntouched(String what) {
      for (int i = 0; i < T * K; i++) {
        assertEquals(-7, outIdx.get(i), what + ": outIdx written");
        assertEquals(-7f, outW.get(i), what + ": outWeights written");
      }
    }
  }

  @ParameterizedTest(name = "{0}")
  @EnumSource(names = {"JAVA", "CPU"})
  void nativeOrderRoutesLikeArraysAndTheOtherOrderIsRejectedOnEveryBuffer(Backend backend) {
    float[] l = ReplayTest.logits(T, E, 3);
    short[] half = new short[l.length];
    for (int i = 0; i < l.length; i++) half[i] = (short) (Float.floatToRawIntBits(l[i]) >>> 16);  // bf16 by truncation
    try (MoeRouter r = MoeRouter.create(CONFIG, backend)) {
      RoutingResult ref = r.route(l, T);
      int[] recorded = ref.indices();
      int[] bfIdx = new int[T * K];
      float[] bfW = new float[T * K];
      r.route(half, LogitsType.BF16, T, bfIdx, bfW);

      Buffers ok = new Buffers(l, half, recorded, NATIVE, NATIVE, NATIVE, NATIVE);
      r.route(ok.logits, LogitsType.FP32, T, null, null, ok.outIdx, ok.outW);
      assertMatches(ref.indices(), ref.weights(), ok, "native FloatBuffer");
      r.route(ok.logitsBytes, LogitsType.FP32, T, null, null, ok.outIdx, ok.outW);
      assertMatches(ref.indices(), ref.weights(), ok, "native ByteBuffer");
      r.route(ok.logitsHalf, LogitsType.BF16, T, ok.replay, ok.mask, ok.outIdx, ok.outW);
      int[] bfReplayIdx = new int[T * K];
      float[] bfReplayW = new float[T * K];
      r.replay(half, LogitsType.BF16, T, recorded, maskArray(), bfReplayIdx, bfReplayW);
      assertMatches(bfReplayIdx, bfReplayW, ok, "native ShortBuffer replay");

      Buffers[] bad = {
          new Buffers(l, half, recorded, OTHER, NATIVE, NATIVE, NATIVE),
          new Buffers(l, half, recorded, NATIVE, OTHER, NATIVE, NATIVE),
          new Buffers(l, half, recorded, NATIVE, NATIVE, OTHER, NATIVE),
          new Buffers(l, half, recorded, NATIVE, NATIVE, NATIVE, OTHER)};
      String[] names = {"logits", "replayIdx", "outIdx", "outWeights"};
      for (int i = 0; i < bad.length; i++) {
        Buffers b = bad[i];
        String name = names[i];
        expectOrderError(name, () -> r.route(b.logits, LogitsType.FP32, T, b.replay, null, b.outIdx, b.outW));
        expectOrderError(name, () -> r.route(b.logitsHalf, LogitsType.BF16, T, b.replay, b.mask, b.outIdx, b.outW));
        if (i == 0) expectOrderError(name, () -> r.route(b.logitsBytes, LogitsType.FP32, T, null, null, b.outIdx, b.outW));
        b.assertUntouched(backend + " " + name);
      }
    }
  }

  static byte[] maskArray() {
    byte[] m = new byte[T];
    for (int i = 0; i < T; i++) m[i] = (byte) (i % 2);
    return m;
  }

  static void expectOrderError(String name, org.junit.jupiter.api.function.Executable call) {
    MoeRouterException e = assertThrows(MoeRouterException.class, call, name);
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertTrue(e.getMessage().startsWith(name + " has byte order " + OTHER), e.getMessage());
  }

  static void assertMatches(int[] idx, float[] w, Buffers b, String what) {
    int[] gotIdx = new int[idx.length];
    float[] gotW = new float[w.length];
    b.outIdx.get(0, gotIdx);
    b.outW.get(0, gotW);
    assertArrayEquals(idx, gotIdx, what + ": indices");
    assertArrayEquals(w, gotW, 0f, what + ": weights " + Arrays.toString(gotW));
  }
}
