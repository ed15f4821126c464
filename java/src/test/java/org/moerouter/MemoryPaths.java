// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.util.Arrays;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;

/**
 * Routes and back-propagates through arrays, direct buffers and raw addresses (JavaCPP pointers) and
 * requires identical results. Run in-process by the tests and, as a main class, in a child JVM (for
 * example JDK 25 with {@code --sun-misc-unsafe-memory-access=deny}).
 */
final class MemoryPaths {
  private MemoryPaths() {}

  static final RouterConfig CONFIG = RouterConfig.builder(48, 6).scoreFunction(ScoreFunction.SIGMOID)
      .expertBias(new float[48]).groups(4, 2).build();

  public static void main(String[] args) {
    for (String b : args) check(Backend.valueOf(b));
    System.out.println("memory paths OK: " + String.join(",", args));
  }

  static void check(Backend backend) {
    // JavaCPP's Pointer natives live in the router's JNI library: load it before the first Pointer.
    if (!NativeLibrary.loaded()) throw new IllegalStateException("native library: " + NativeLibrary.loadFailure());
    int t = 33, e = CONFIG.experts(), k = CONFIG.topK();
    float[] l = ReplayTest.logits(t, e, 8);
    float[] dw = new float[t * k];
    Arrays.fill(dw, 0.125f);
    try (MoeRouter r = MoeRouter.create(CONFIG, backend)) {
      RoutingResult ref = r.route(l, t);
      float[] refGrad = new float[t * e];
      r.backward(l, t, ref.indices(), dw, refGrad);

      // Direct buffers, from a non-zero position.
      FloatBuffer logits = direct(4 * (l.length + 3)).asFloatBuffer();
      logits.position(3);
      logits.put(l).position(3);
      IntBuffer idx = direct(4 * (t * k + 1)).asIntBuffer();
      idx.position(1);
      FloatBuffer w = direct(4 * t * k).asFloatBuffer();
      r.route(logits, LogitsType.FP32, t, null, null, idx, w);
      int[] gotIdx = new int[t * k];
      float[] gotW = new float[t * k];
      idx.get(1, gotIdx);
      w.get(0, gotW);
      same(backend + " buffers: indices", ref.indices(), gotIdx);
      same(backend + " buffers: weights", ref.weights(), gotW);

      // The same buffer objects again, at other positions: the address follows the position.
      RoutingResult tail = r.route(Arrays.copyOfRange(l, e, l.length), t - 1);
      logits.position(3 + e);
      idx.position(0);
      r.route(logits, LogitsType.FP32, t - 1, null, null, idx, w);
      int[] tailIdx = new int[(t - 1) * k];
      idx.get(0, tailIdx);
      same(backend + " buffers at new positions: indices", tail.indices(), tailIdx);
      logits.position(3);
      idx.position(1);

      // Raw addresses.
      try (FloatPointer pl = new FloatPointer(l); IntPointer pi = new IntPointer((long) t * k);
          FloatPointer pw = new FloatPointer((long) t * k); IntPointer pri = new IntPointer(ref.indices());
          FloatPointer pdw = new FloatPointer(dw); FloatPointer pg = new FloatPointer((long) t * e)) {
        r.routeAddress(pl.address(), LogitsType.FP32, t, 0, 0, pi.address(), pw.address());
        pi.get(gotIdx);
        pw.get(gotW);
        same(backend + " addresses: indices", ref.indices(), gotIdx);
        same(backend + " addresses: weights", ref.weights(), gotW);
        r.routeAddress(pl.address(), LogitsType.FP32, t, pri.address(), 0, pi.address(), pw.address());
        pw.get(gotW);
        same(backend + " addresses: replayed weights", ref.weights(), gotW);
        r.backwardAddress(pl.address(), LogitsType.FP32, t, pri.address(), pdw.address(), pg.address());
        float[] grad = new float[t * e];
        pg.get(grad);
        same(backend + " addresses: gradients", refGrad, grad);
      }
    }
  }

  static ByteBuffer direct(int bytes) {
    return ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder());
  }

  private static void same(String what, int[] a, int[] b) {
    if (!Arrays.equals(a, b)) throw new AssertionError(what + " differ: " + Arrays.toString(a) + " vs " + Arrays.toString(b));
  }

  private static void same(String what, float[] a, float[] b) {
    if (!Arrays.equals(a, b)) throw new AssertionError(what + " differ");
  }
}
