// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.nio.Buffer;
import java.nio.ByteBuffer;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;

/**
 * A test double's base: a router that hands every backend call to a Java backend, so that a subclass
 * overrides only the call it observes or fakes (the public API's checks, counters and dispatch stay
 * MoeRouter's own, as in the real backends).
 */
abstract class ForwardingRouter extends MoeRouter {
  final JavaRouter inner;

  ForwardingRouter(RouterConfig config) {
    super(config, Backend.JAVA);
    inner = new JavaRouter(config);
  }

  @Override
  long routeArrays(float[] f32, short[] half, LogitsType type, int tokens, int[] replayIdx, byte[] replayMask,
      int[] outIdx, float[] outWeights, byte[] outFlags) {
    return inner.routeArrays(f32, half, type, tokens, replayIdx, replayMask, outIdx, outWeights, outFlags);
  }

  @Override
  long routeBuffers(Buffer logits, LogitsType type, int tokens, IntBuffer replayIdx, ByteBuffer replayMask,
      IntBuffer outIdx, FloatBuffer outWeights, ByteBuffer outFlags) {
    return inner.routeBuffers(logits, type, tokens, replayIdx, replayMask, outIdx, outWeights, outFlags);
  }

  @Override
  long routeHost(long logits, LogitsType type, long tokens, long replayIdx, long replayMask, long outIdx,
      long outWeights, long outFlags) {
    return inner.routeHost(logits, type, tokens, replayIdx, replayMask, outIdx, outWeights, outFlags);
  }

  @Override
  void backwardArrays(float[] f32, short[] half, LogitsType type, int tokens, int[] idx, float[] gradWeights,
      byte[] flags, float[] gradLogits) {
    inner.backwardArrays(f32, half, type, tokens, idx, gradWeights, flags, gradLogits);
  }

  @Override
  void backwardHost(long logits, LogitsType type, long tokens, long idx, long gradWeights, long flags,
      long gradLogits) {
    inner.backwardHost(logits, type, tokens, idx, gradWeights, flags, gradLogits);
  }

  @Override
  void applyExpertBias(float[] bias) {
    inner.applyExpertBias(bias);
  }

  @Override
  void freeResources() {
    inner.close();
  }
}
