// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.ShortBuffer;
import java.util.Arrays;
import java.util.function.Consumer;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.ShortPointer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Behaviour that PIT showed no test pinned down in the routing paths (org.moerouter: JavaRouter, JavaRouting,
 * HostMemory, HostCalls; docs/testing.md lists each mutant): the Java backend's raw-address calls with half
 * logits and row flags, direct buffers of every element size from a non-zero position, the first non-finite
 * expert named under ERROR, a native backward's error status, the 2^31-logit limit of the Java backend, the
 * epsilon of sigmoid normalisation when every score is tiny, and log_det at its branch point.
 */
class RoutingPitSurvivorsTest {
  static final int E = 16, K = 4, T = 9;

  @BeforeAll
  static void nativeLibrary() {
    // JavaCPP's Pointer natives live in the router's JNI library: load it before the first Pointer.
    assertTrue(NativeLibrary.loaded(), () -> "native library: " + NativeLibrary.loadFailure());
  }

  /** bf16 logits [T, E] with NaN in row 2 and -inf in row 5, so that ZERO has rows to flag. */
  static short[] bf16Logits() {
    float[] l = ReplayTest.logits(T, E, 77);
    short[] h = new short[l.length];
    for (int i = 0; i < l.length; i++) h[i] = (short) (Float.floatToRawIntBits(l[i]) >>> 16);
    h[2 * E + 3] = (short) 0x7fc0;
    h[5 * E + 11] = (short) 0xff80;
    return h;
  }

  static ByteBuffer direct(int bytes) {
    return ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder());
  }

  /** The indices, weights and row flags that the three readers copy out equal the array call's. */
  static void assertOutputs(String what, int[] idx, float[] w, byte[] flags, Consumer<int[]> readIdx,
      Consumer<float[]> readWeights, Consumer<byte[]> readFlags) {
    int[] gi = new int[idx.length];
    float[] gw = new float[w.length];
    byte[] gf = new byte[flags.length];
    readIdx.accept(gi);
    readWeights.accept(gw);
    readFlags.accept(gf);
    assertArrayEquals(idx, gi, what + "indices");
    assertArrayEquals(w, gw, what + "weights");
    assertArrayEquals(flags, gf, what + "flags");
  }

  /**
   * Raw addresses and direct buffers give what the array calls give, for bf16 logits under ZERO: indices,
   * weights, the per-row flags and the count of flagged rows, live and replayed with a mask, and the backward
   * with the forward's flags. (PIT: the Java backend's routeHost dropped the flags and its count, never read
   * half logits or flags through addresses; a buffer's position was never applied for one- and two-byte
   * elements.)
   */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void addressesAndPositionedBuffersMatchArraysForHalfLogitsAndRowFlags(Backend backend) {
    RouterConfig c = RouterConfig.builder(E, K).scoreFunction(ScoreFunction.SIGMOID).nonFinite(NonFinitePolicy.ZERO)
        .build();
    short[] h = bf16Logits();
    byte[] mask = new byte[T];
    for (int t = 0; t < T; t += 2) mask[t] = 1;
    float[] dw = new float[T * K];
    for (int i = 0; i < dw.length; i++) dw[i] = 0.25f + i % 3;
    try (MoeRouter r = MoeRouter.create(c, backend)) {
      int[] idx = new int[T * K];
      float[] w = new float[T * K];
      byte[] flags = new byte[T];
      long rows = r.route(h, LogitsType.BF16, T, idx, w, flags);
      assertEquals(2, rows);
      assertArrayEquals(new byte[] {0, 0, 1, 0, 0, 1, 0, 0, 0}, flags);
      // Replay the reversed selection on the rows of the mask; the others route live.
      int[] rev = new int[T * K];
      for (int t = 0; t < T; t++) for (int j = 0; j < K; j++) rev[t * K + j] = idx[t * K + K - 1 - j];
      int[] ridx = new int[T * K];
      float[] rw = new float[T * K];
      byte[] rflags = new byte[T];
      long rrows = r.replay(h, LogitsType.BF16, T, rev, mask, ridx, rw, rflags);
      float[] grad = new float[T * E];
      r.backward(h, LogitsType.BF16, T, idx, dw, flags, grad);

      try (ShortPointer pl = new ShortPointer(h); IntPointer pi = new IntPointer((long) T * K);
          FloatPointer pw = new FloatPointer((long) T * K); BytePointer pf = new BytePointer((long) T);
          IntPointer prev = new IntPointer(rev); BytePointer pm = new BytePointer(mask);
          IntPointer pidx = new IntPointer(idx); FloatPointer pdw = new FloatPointer(dw);
          BytePointer pflags = new BytePointer(flags); FloatPointer pg = new FloatPointer((long) T * E)) {
        assertEquals(rows, r.routeAddress(pl.address(), LogitsType.BF16, T, 0, 0, pi.address(), pw.address(), pf.address()));
        assertOutputs(backend + " addresses: ", idx, w, flags, pi::get, pw::get, pf::get);
        assertEquals(rrows, r.routeAddress(pl.address(), LogitsType.BF16, T, prev.address(), pm.address(), pi.address(),
            pw.address(), pf.address()));
        assertOutputs(backend + " addresses: replayed ", ridx, rw, rflags, pi::get, pw::get, pf::get);

        r.backwardAddress(pl.address(), LogitsType.BF16, T, pidx.address(), pdw.address(), pflags.address(), pg.address());
        float[] gg = new float[T * E];
        pg.get(gg);
        assertArrayEquals(grad, gg, backend + " addresses: gradient");
      }

      // Direct buffers from non-zero positions: bf16 logits as a ShortBuffer and as raw bytes, an IntBuffer
      // replay, a byte mask and byte flags, each at its own offset.
      ShortBuffer sl = direct(2 * (T * E + 3)).asShortBuffer();
      sl.position(3);
      sl.put(h).position(3);
      ByteBuffer bl = direct(2 * (T * E + 5));
      bl.position(10);
      bl.asShortBuffer().put(h);
      IntBuffer br = direct(4 * (T * K + 1)).asIntBuffer();
      br.position(1);
      br.put(rev).position(1);
      ByteBuffer bm = direct(T + 5);
      bm.position(5);
      bm.put(mask).position(5);
      IntBuffer bi = direct(4 * (T * K + 2)).asIntBuffer();
      bi.position(2);
      FloatBuffer bw = direct(4 * (T * K + 1)).asFloatBuffer();
      bw.position(1);
      ByteBuffer bf = direct(T + 7);
      bf.position(7);
      for (java.nio.Buffer logits : new java.nio.Buffer[] {sl, bl}) {
        String where = backend + " " + logits.getClass().getSimpleName();
        assertEquals(rows, r.route(logits, LogitsType.BF16, T, null, null, bi, bw, bf), where);
        assertOutputs(where + ": ", idx, w, flags, gi -> bi.get(2, gi), gw -> bw.get(1, gw), gf -> bf.get(7, gf));
        assertEquals(rrows, r.route(logits, LogitsType.BF16, T, br, bm, bi, bw, bf), where);
        assertOutputs(where + ": replayed ", ridx, rw, rflags, gi -> bi.get(2, gi), gw -> bw.get(1, gw),
            gf -> bf.get(7, gf));
      }
    }
  }

  /**
   * Under ERROR a replayed row is rejected for the first non-finite logit it reads, expert 0 included, and the
   * message names that expert (PIT: the Java scan went on past a bad expert 0 and named the next one).
   */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void errorPolicyNamesExpertZeroWhenItIsTheFirstNonFiniteRead(Backend backend) {
    RouterConfig c = RouterConfig.builder(8, 2).scoreFunction(ScoreFunction.SIGMOID).nonFinite(NonFinitePolicy.ERROR)
        .build();
    float[] l = ReplayTest.logits(3, 8, 5);
    l[8] = Float.NaN;
    l[8 + 3] = Float.POSITIVE_INFINITY;
    int[] replay = {1, 2, 0, 3, 4, 5};
    int[] outIdx = new int[6];
    float[] outW = new float[6];
    Arrays.fill(outW, 7f);
    try (MoeRouter r = MoeRouter.create(c, backend)) {
      MoeRouterException x = assertThrows(MoeRouterException.class, () -> r.replay(l, 3, replay, null, outIdx, outW));
      assertEquals(Status.NONFINITE, x.status());
      assertTrue(x.getMessage().endsWith("row 1: the logit of expert 0 is NaN (non-finite policy ERROR)"), x.getMessage());
      for (float v : outW) assertEquals(7f, v, "nothing written");
    }
  }

  /** A native backward over addresses reports an invalid row instead of returning normally (PIT: status dropped). */
  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void backwardAddressRejectsAnInvalidRow(Backend backend) {
    float[] l = ReplayTest.logits(2, E, 9);
    int[] idx = {0, 1, 2, 3, 5, 6, 5, 7};
    float[] dw = new float[2 * K];
    Arrays.fill(dw, 1f);
    float[] sentinel = new float[2 * E];
    Arrays.fill(sentinel, -3f);
    try (MoeRouter r = MoeRouter.create(RouterConfig.builder(E, K).build(), backend);
        FloatPointer pl = new FloatPointer(l); IntPointer pi = new IntPointer(idx); FloatPointer pdw = new FloatPointer(dw);
        FloatPointer pg = new FloatPointer(sentinel)) {
      MoeRouterException x = assertThrows(MoeRouterException.class,
          () -> r.backwardAddress(pl.address(), LogitsType.FP32, 2, pi.address(), pdw.address(), pg.address()));
      assertEquals(Status.INVALID_REPLAY, x.status());
      assertTrue(x.getMessage().contains("row 1: expert 5 appears twice (positions 0 and 2)"), x.getMessage());
      float[] g = new float[2 * E];
      pg.get(g);
      assertArrayEquals(sentinel, g, "nothing written");
    }
  }

  /**
   * The Java backend copies raw memory into arrays, so it refuses a call above 2^31 logits before it reads any
   * address (the addresses here are bogus: reading one would crash the JVM).
   */
  @Test
  void javaBackendRefusesMoreThanTwoToThe31LogitsBeforeReadingMemory() {
    try (MoeRouter r = MoeRouter.create(RouterConfig.builder(64, 6).build(), Backend.JAVA)) {
      long tokens = 1L << 26;  // 2^32 logits
      MoeRouterException x = assertThrows(MoeRouterException.class,
          () -> r.routeAddress(8, LogitsType.FP32, tokens, 0, 0, 8, 8));
      assertEquals(Status.UNSUPPORTED, x.status());
      assertTrue(x.getMessage().contains("at most 2^31 logits per call"), x.getMessage());
      assertEquals(Status.UNSUPPORTED, assertThrows(MoeRouterException.class,
          () -> r.backwardAddress(8, LogitsType.BF16, tokens, 8, 8, 8)).status());
      // Just below the limit in tokens * E, above it in tokens * E * 4 bytes: still refused only by size.
      assertEquals(Status.UNSUPPORTED, assertThrows(MoeRouterException.class,
          () -> r.routeAddress(8, LogitsType.FP32, (Integer.MAX_VALUE / 64) + 1, 0, 0, 8, 8)).status());
    }
  }

  /**
   * Sigmoid scores far below the normalisation epsilon (1e-20): the weights, the backward and the aux-loss
   * scores divide by sum + eps, so every result stays finite and keeps its sign, on both backends bit for bit
   * (PIT: sum - eps went unnoticed, since every test's scores were ~1).
   */
  @Test
  void tinySigmoidScoresAreNormalisedWithAPositiveEpsilon() {
    RouterConfig c = RouterConfig.builder(E, K).scoreFunction(ScoreFunction.SIGMOID).normalize(true).build();
    int t = 5;
    float[] l = ReplayTest.logits(t, E, 21);
    for (int i = 0; i < l.length; i++) l[i] = -60f + 0.5f * l[i];  // S ~ 1e-26
    float[] dw = new float[t * K];
    for (int i = 0; i < dw.length; i++) dw[i] = (i % K) == 0 ? 1f : 0f;
    float[][] grads = new float[2][t * E];
    float[][] scores = new float[2][t * E];
    int b = 0;
    for (Backend backend : Backends.host()) {
      try (MoeRouter r = MoeRouter.create(c, backend)) {
        RoutingResult res = r.route(l, t);
        r.backward(l, t, res.indices(), dw, grads[b]);
        r.auxLoss(l, t, 0.01f, scores[b], null, null, null);
        for (int tok = 0; tok < t; tok++) {
          // Float64 reference: S_j / (sum S + 1e-20) and its gradient for dw = e_0.
          double[] s = new double[K];
          double z = 1e-20;
          for (int j = 0; j < K; j++) z += s[j] = 1 / (1 + Math.exp(-l[tok * E + res.expert(tok, j)]));
          for (int j = 0; j < K; j++) {
            double wj = s[j] / z;
            assertTrue(Backends.close(res.weight(tok, j), wj, 1e-4, 0), backend + " weight " + tok + "," + j);
            double du = ((j == 0 ? 1 : 0) - s[0] / z) / z;
            double g = du * s[j] * (1 - s[j]);
            float got = grads[b][tok * E + res.expert(tok, j)];
            assertTrue(Backends.close(got, g, 1e-3, 0), backend + " gradient " + tok + "," + j + ": " + got + " vs " + g);
          }
          double zs = 1e-20;
          for (int i = 0; i < E; i++) zs += 1 / (1 + Math.exp(-l[tok * E + i]));
          for (int i = 0; i < E; i++) {
            double want = 1 / (1 + Math.exp(-l[tok * E + i])) / zs;
            assertTrue(Backends.close(scores[b][tok * E + i], want, 1e-4, 0), backend + " aux score " + tok + "," + i);
          }
        }
      }
      b++;
    }
    assertArrayEquals(grads[0], grads[1], "JAVA vs CPU gradient");
    assertArrayEquals(scores[0], scores[1], "JAVA vs CPU aux scores");
  }

  /**
   * log_det at its branch point: a row whose softmax denominator is exactly 1.4142135f (mantissa 0.70710677,
   * the constant log_det compares against). The z-loss is lse^2 with lse the correctly rounded ln of that
   * sum, the same on both backends (PIT: {@code m <= 0.7071} moved the lse one ulp, a drift from the native
   * backend's bits).
   */
  @Test
  void zLossAtTheBranchPointOfLogDetIsCorrectlyRounded() {
    float sum = Float.intBitsToFloat(0x3FB504F3);
    float l1 = Float.intBitsToFloat(0xbf61a1b3);  // expDet(l1) == sum - 1 exactly
    assertEquals(sum, 1f + JavaRouting.expDet(l1));
    float[] row = new float[8];
    Arrays.fill(row, -200f);  // exp underflows to 0
    row[0] = 0f;
    row[1] = l1;
    float lse = (float) Math.log(sum);
    float want = (float) ((double) lse * (double) lse);
    for (Backend backend : Backends.host()) {
      try (MoeRouter r = MoeRouter.create(RouterConfig.builder(8, 2).build(), backend)) {
        assertEquals(want, r.zLoss(row, 1, 1f, null), backend.toString());
      }
    }
    assertNotEquals(want, (float) Math.pow(Math.nextUp(lse), 2), "the test tells one ulp of lse apart");
  }

  /** On JDK 17-21 host calls are JNI; asking for FFM says why it is not used. */
  @Test
  void hostCallBindingBeforeJdk22() {
    assumeTrue(Runtime.version().feature() < 22, "JDK 22+ runs the java22 HostCalls (MoeSegmentsTest)");
    String before = System.getProperty("moerouter.hostCalls");
    try {
      System.clearProperty("moerouter.hostCalls");
      assertEquals("JNI", NativeLibrary.hostCallBinding());
      System.setProperty("moerouter.hostCalls", " FFM ");
      assertEquals("JNI (FFM unavailable: FFM needs JDK 22+)", NativeLibrary.hostCallBinding());
      System.setProperty("moerouter.hostCalls", "jni");
      assertEquals("JNI", NativeLibrary.hostCallBinding());
    } finally {
      if (before == null) System.clearProperty("moerouter.hostCalls");
      else System.setProperty("moerouter.hostCalls", before);
    }
  }
}
