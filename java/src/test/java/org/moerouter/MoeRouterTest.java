// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.util.Arrays;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Factory, argument checking, memory paths and lifecycle of the router API. */
class MoeRouterTest {
  static final RouterConfig CONFIG = RouterConfig.builder(48, 6).scoreFunction(ScoreFunction.SIGMOID)
      .expertBias(new float[48]).groups(4, 2).build();

  @Test
  void nativeLibraryShipsInTheJarAndLoads() {
    assertTrue(NativeLibrary.loaded(), "JNI library failed to load: " + NativeLibrary.loadFailure());
    assertEquals(0, NativeLibrary.emptyCall());
    assertTrue(MoeRouter.isAvailable(Backend.CPU), MoeRouter.unavailableReason(Backend.CPU));
  }

  @Test
  void automaticBackendPrefersCudaThenCpu() {
    try (MoeRouter r = MoeRouter.create(CONFIG)) {
      Backend expected = NativeLibrary.cudaDeviceCount() > 0 ? Backend.CUDA : Backend.CPU;
      assertEquals(expected, r.backend());
      assertEquals(expected, MoeRouter.defaultBackend());
    }
  }

  @Test
  void cudaWithoutDeviceFailsWithAReason() {
    if (NativeLibrary.cudaDeviceCount() > 0) return;  // covered by the GPU tests
    MoeRouterException e = assertThrows(MoeRouterException.class, () -> MoeRouter.create(CONFIG, Backend.CUDA));
    assertEquals(Status.UNSUPPORTED, e.status());
    assertTrue(e.getMessage().contains("CUDA"), e.getMessage());
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void closeIsIdempotentAndUseAfterCloseFails(Backend backend) {
    MoeRouter r = MoeRouter.create(CONFIG, backend);
    r.close();
    assertDoesNotThrow(r::close);
    IllegalStateException e = assertThrows(IllegalStateException.class,
        () -> r.route(new float[48], 1, new int[6], new float[6]));
    assertTrue(e.getMessage().contains("closed"), e.getMessage());
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void undersizedOrMissingArraysAreRejectedBeforeAnyWork(Backend backend) {
    try (MoeRouter r = MoeRouter.create(CONFIG, backend)) {
      int[] idx = new int[12];
      float[] w = new float[12];
      assertInvalid(() -> r.route(new float[48 * 2 - 1], 2, idx, w), "logits holds 95 elements, needs 96");
      assertInvalid(() -> r.route(new float[96], 2, new int[11], w), "outIdx");
      assertInvalid(() -> r.route(new float[96], 2, idx, null), "outWeights must not be null");
      assertInvalid(() -> r.route(new float[96], -1, idx, w), "tokens must be >= 0");
      assertInvalid(() -> r.replay(new float[96], 2, new int[11], null, idx, w), "replayIdx");
      assertInvalid(() -> r.route(new short[96], LogitsType.FP32, 2, idx, w), "BF16 or FP16");
      assertInvalid(() -> r.setExpertBias(new float[47]), "48 entries");
      float[] nanBias = new float[48];
      nanBias[3] = Float.NaN;
      assertInvalid(() -> r.setExpertBias(nanBias), "bias[3]");
      assertEquals(0, r.route(new float[0], 0, new int[0], new float[0]), "T = 0 is a valid no-op");
    }
  }

  static void assertInvalid(org.junit.jupiter.api.function.Executable call, String fragment) {
    MoeRouterException e = assertThrows(MoeRouterException.class, call);
    assertEquals(Status.INVALID_ARGUMENT, e.status());
    assertTrue(e.getMessage().contains(fragment), "'" + e.getMessage() + "' lacks '" + fragment + "'");
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void directBuffersAndAddressesMatchArrays(Backend backend) {
    int t = 33;
    float[] l = ReplayTest.logits(t, 48, 8);
    try (MoeRouter r = MoeRouter.create(CONFIG, backend)) {
      RoutingResult ref = r.route(l, t);
      FloatBuffer logits = ByteBuffer.allocateDirect(l.length * 4).order(ByteOrder.nativeOrder()).asFloatBuffer();
      logits.put(l).flip();
      IntBuffer idx = ByteBuffer.allocateDirect(t * 6 * 4).order(ByteOrder.nativeOrder()).asIntBuffer();
      FloatBuffer w = ByteBuffer.allocateDirect(t * 6 * 4).order(ByteOrder.nativeOrder()).asFloatBuffer();
      r.route(logits, LogitsType.FP32, t, null, null, idx, w);
      int[] gotIdx = new int[t * 6];
      float[] gotW = new float[t * 6];
      idx.get(0, gotIdx);
      w.get(0, gotW);
      assertArrayEquals(ref.indices(), gotIdx);
      assertArrayEquals(ref.weights(), gotW, 0f);

      // Replay through buffers with a mask: rows with mask 0 route live, the others take the replayed
      // experts (a rotation of the live row, so the weights move with them).
      int[] rotated = new int[t * 6];
      for (int row = 0; row < t; row++)
        for (int j = 0; j < 6; j++) rotated[row * 6 + j] = ref.indices()[row * 6 + (j + 1) % 6];
      int[] other = TestData.randomSelection(new java.util.SplittableRandom(3), t, 6, 48);
      ByteBuffer mask = ByteBuffer.allocateDirect(t);
      byte[] maskBytes = new byte[t];
      for (int i = 0; i < t; i++) mask.put(i, maskBytes[i] = (byte) (i % 3 == 1 ? 0 : 1));
      int[] replay = rotated.clone();
      int[] forced = rotated.clone();
      for (int row = 0; row < t; row++)
        if (maskBytes[row] == 0) {
          System.arraycopy(other, row * 6, replay, row * 6, 6);
          System.arraycopy(ref.indices(), row * 6, forced, row * 6, 6);
        }
      RoutingResult expected = r.replay(l, t, forced, null);
      IntBuffer rep = ByteBuffer.allocateDirect(t * 6 * 4).order(ByteOrder.nativeOrder()).asIntBuffer();
      rep.put(0, replay);
      IntBuffer out2 = ByteBuffer.allocateDirect(t * 6 * 4).order(ByteOrder.nativeOrder()).asIntBuffer();
      r.route(logits, LogitsType.FP32, t, rep, mask, out2, w);
      out2.get(0, gotIdx);
      w.get(0, gotW);
      assertArrayEquals(expected.indices(), gotIdx, "buffers: masked replay indices");
      assertArrayEquals(expected.weights(), gotW, 0f, "buffers: masked replay weights");
      assertNotEquals(Arrays.toString(ref.weights()), Arrays.toString(expected.weights()), "replay moved the weights");
      assertThrows(MoeRouterException.class,
          () -> r.route(FloatBuffer.wrap(l), LogitsType.FP32, t, null, null, idx, w));

      // The same through raw addresses (JavaCPP pointers; their natives are in the router's library).
      assertTrue(NativeLibrary.loaded(), () -> "native library: " + NativeLibrary.loadFailure());
      float[] dw = new float[t * 6];
      for (int i = 0; i < dw.length; i++) dw[i] = (i % 5) * 0.25f - 0.5f;
      float[] refGrad = new float[t * 48];
      r.backward(l, t, expected.indices(), dw, refGrad);
      try (FloatPointer pl = new FloatPointer(l); IntPointer pr = new IntPointer(replay);
          BytePointer pm = new BytePointer(maskBytes); IntPointer pi = new IntPointer((long) t * 6);
          FloatPointer pw = new FloatPointer((long) t * 6); BytePointer pf = new BytePointer((long) t);
          IntPointer pe = new IntPointer(expected.indices()); FloatPointer pdw = new FloatPointer(dw);
          FloatPointer pg = new FloatPointer((long) t * 48)) {
        assertEquals(0, r.routeAddress(pl.address(), LogitsType.FP32, t, 0, 0, pi.address(), pw.address()));
        pi.get(gotIdx);
        pw.get(gotW);
        assertArrayEquals(ref.indices(), gotIdx, "addresses: live indices");
        assertArrayEquals(ref.weights(), gotW, 0f, "addresses: live weights");
        assertEquals(0, r.routeAddress(pl.address(), LogitsType.FP32, t, pr.address(), pm.address(), pi.address(),
            pw.address(), pf.address()));
        pi.get(gotIdx);
        pw.get(gotW);
        assertArrayEquals(expected.indices(), gotIdx, "addresses: masked replay indices");
        assertArrayEquals(expected.weights(), gotW, 0f, "addresses: masked replay weights");
        r.backwardAddress(pl.address(), LogitsType.FP32, t, pe.address(), pdw.address(), pg.address());
        float[] grad = new float[t * 48];
        pg.get(grad);
        assertArrayEquals(refGrad, grad, 0f, "addresses: gradients");
      }
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void nonFiniteRowsAreCountedAndStillGetDistinctExperts(Backend backend) {
    int t = 4, e = 48, k = 6;
    float[] l = ReplayTest.logits(t, e, 1);
    Arrays.fill(l, 0, e, Float.NaN);  // row 0 all NaN
    l[e + 3] = Float.POSITIVE_INFINITY;  // row 1
    l[2 * e + 7] = Float.NEGATIVE_INFINITY;  // row 2
    try (MoeRouter r = MoeRouter.create(CONFIG, backend)) {
      RoutingResult res = r.route(l, t);
      assertEquals(3, res.nonfiniteRows());
      BackendEquivalenceTest.assertRowsValid(backend.toString(), res.indices(), t, k, e);
      assertNotEquals(7, res.expert(2, 0));
    }
  }

  @ParameterizedTest
  @EnumSource(names = {"JAVA", "CPU"})
  void expertBiasChangesSelectionButNotWeights(Backend backend) {
    RouterConfig plain = RouterConfig.builder(16, 2).scoreFunction(ScoreFunction.SIGMOID).build();
    float[] l = ReplayTest.logits(1, 16, 3);
    try (MoeRouter r = MoeRouter.create(plain.withExpertBias(new float[16]), backend)) {
      float[] bias = new float[16];
      bias[11] = 100f;
      bias[13] = 90f;
      RoutingResult before = r.route(l, 1);
      r.setExpertBias(bias);
      RoutingResult after = r.route(l, 1);
      assertArrayEquals(new int[] {11, 13}, after.indices());
      double s11 = 1 / (1 + Math.exp(-l[11])), s13 = 1 / (1 + Math.exp(-l[13]));
      assertEquals(s11 / (s11 + s13), after.weight(0, 0), 1e-6);
      assertNotEquals(Arrays.toString(before.indices()), Arrays.toString(after.indices()));
    }
  }
}
