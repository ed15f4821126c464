// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.function.Supplier;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * MoeSegments (JDK 22+, run from the multi-release jar by the jdk22-tests execution): the same results as
 * the array overloads on every host backend and arena kind, and clear errors, with outputs untouched, for
 * every rule it checks.
 */
class MoeSegmentsTest {
  private static final int E = 96, K = 8;

  private static RouterConfig config(boolean grouped) {
    RouterConfig.Builder b = RouterConfig.builder(E, K);
    if (grouped) {
      float[] bias = new float[E];
      SplittableRandom r = new SplittableRandom(3);
      for (int i = 0; i < E; i++) bias[i] = (float) (r.nextDouble() * 0.2 - 0.1);
      b.scoreFunction(ScoreFunction.SIGMOID).expertBias(bias).groups(4, 2).scale(2.5f);
    }
    return b.build();
  }

  static Stream<Arguments> cases() {
    Stream.Builder<Arguments> s = Stream.builder();
    for (Backend backend : Backends.host())
      for (boolean grouped : new boolean[] {false, true})
        for (LogitsType type : new LogitsType[] {LogitsType.FP32, LogitsType.BF16})
          // 64 and 65 sit either side of the critical-downcall threshold of the jdk22-tests-ffm run
          for (int tokens : new int[] {0, 1, 64, 65, 300})
            s.add(Arguments.of(backend, grouped, type, tokens));
    return s.build();
  }

  private static float[] logitsF32(int n, long seed) {
    SplittableRandom r = new SplittableRandom(seed);
    float[] out = new float[n];
    for (int i = 0; i < n; i++) out[i] = (float) (r.nextDouble() * 8 - 4);
    return out;
  }

  private static short[] toBf16(float[] f) {
    short[] out = new short[f.length];
    for (int i = 0; i < f.length; i++) out[i] = (short) (Float.floatToRawIntBits(f[i]) >>> 16);
    return out;
  }

  @ParameterizedTest(name = "{0} grouped={1} {2} T={3}")
  @MethodSource("cases")
  void routeReplayAndBackwardMatchTheArrayOverloads(Backend backend, boolean grouped, LogitsType type, int tokens) {
    RouterConfig rc = config(grouped);
    float[] f32 = logitsF32(tokens * E, 11 + tokens);
    short[] half = toBf16(f32);
    int[] replay = TestData.randomSelection(new SplittableRandom(5), tokens, K, E);
    byte[] mask = new byte[tokens];
    for (int t = 0; t < tokens; t++) mask[t] = (byte) (t % 3 == 0 ? 0 : 1);
    float[] dw = logitsF32(tokens * K, 17);
    String where = backend + " grouped=" + grouped + " " + type + " T=" + tokens + " binding=" + NativeLibrary.hostCallBinding();
    try (MoeRouter router = MoeRouter.create(rc, backend); Arena arena = Arena.ofConfined()) {
      MemorySegment logits = type == LogitsType.FP32 ? arena.allocateFrom(JAVA_FLOAT, f32) : arena.allocateFrom(JAVA_SHORT, half);
      MemorySegment idx = arena.allocate(JAVA_INT, (long) tokens * K);
      MemorySegment w = arena.allocate(JAVA_FLOAT, (long) tokens * K);
      int[] idxA = new int[tokens * K];
      float[] wA = new float[tokens * K];

      long nf = MoeSegments.route(router, logits, type, tokens, idx, w);
      long nfA = type == LogitsType.FP32 ? router.route(f32, tokens, idxA, wA) : router.route(half, type, tokens, idxA, wA);
      assertEquals(nfA, nf, where);
      assertArrayEquals(idxA, idx.toArray(JAVA_INT), "live indices, " + where);
      assertArrayEquals(wA, w.toArray(JAVA_FLOAT), "live weights, " + where);

      MemorySegment rIdx = arena.allocateFrom(JAVA_INT, replay);
      MemorySegment rMask = arena.allocateFrom(JAVA_BYTE, mask);
      MoeSegments.replay(router, logits, type, tokens, rIdx, rMask, idx, w);
      if (type == LogitsType.FP32) router.replay(f32, tokens, replay, mask, idxA, wA);
      else router.replay(half, type, tokens, replay, mask, idxA, wA);
      assertArrayEquals(idxA, idx.toArray(JAVA_INT), "replay indices, " + where);
      assertArrayEquals(wA, w.toArray(JAVA_FLOAT), "replay weights, " + where);

      MemorySegment gw = arena.allocateFrom(JAVA_FLOAT, dw);
      MemorySegment gl = arena.allocate(JAVA_FLOAT, (long) tokens * E);
      float[] glA = new float[tokens * E];
      MoeSegments.backward(router, logits, type, tokens, idx, gw, gl);
      if (type == LogitsType.FP32) router.backward(f32, tokens, idxA, dw, glA);
      else router.backward(half, type, tokens, idxA, dw, glA);
      assertArrayEquals(glA, gl.toArray(JAVA_FLOAT), "backward, " + where);
    }
  }

  @Test
  void goldenCasesThroughSegments() {
    List<Goldens.Case> cases = Goldens.all();
    assertTrue(!cases.isEmpty(), "no golden cases found");
    for (Backend backend : Backends.host())
      for (Goldens.Case c : cases)
        try (MoeRouter router = MoeRouter.create(c.config, backend); Arena arena = Arena.ofConfined()) {
          int k = c.config.topK();
          MemorySegment logits = arena.allocateFrom(JAVA_FLOAT, c.logits);
          MemorySegment idx = arena.allocate(JAVA_INT, (long) c.tokens * k);
          MemorySegment w = arena.allocate(JAVA_FLOAT, (long) c.tokens * k);
          MoeSegments.route(router, logits, LogitsType.FP32, c.tokens, idx, w);
          assertArrayEquals(c.liveIdx, idx.toArray(JAVA_INT), c + " on " + backend);
          float[] got = w.toArray(JAVA_FLOAT);
          for (int i = 0; i < got.length; i++)
            assertTrue(Backends.close(got[i], c.liveWeights[i], 1e-5, 1e-7),
                c + " on " + backend + ": weight " + i + " " + got[i] + " vs " + c.liveWeights[i]);
        }
  }

  @Test
  void everyArenaKindWorksAndInPlaceReplayIsAllowed() {
    RouterConfig rc = config(true);
    int tokens = 5;
    float[] f32 = logitsF32(tokens * E, 1);
    int[] idxA = new int[tokens * K];
    float[] wA = new float[tokens * K];
    try (MoeRouter router = MoeRouter.create(rc, Backend.CPU)) {
      router.route(f32, tokens, idxA, wA);
      List<Supplier<Arena>> kinds = List.of(Arena::ofConfined, Arena::ofShared, Arena::ofAuto, Arena::global);
      for (Supplier<Arena> kind : kinds) {
        Arena arena = kind.get();
        MemorySegment logits = arena.allocateFrom(JAVA_FLOAT, f32);
        MemorySegment idx = arena.allocate(JAVA_INT, (long) tokens * K);
        MemorySegment w = arena.allocate(JAVA_FLOAT, (long) tokens * K);
        MoeSegments.route(router, logits, LogitsType.FP32, tokens, idx, w);
        assertArrayEquals(idxA, idx.toArray(JAVA_INT), arena.toString());
        MoeSegments.replay(router, logits, LogitsType.FP32, tokens, idx, null, idx, w);  // in place
        assertArrayEquals(idxA, idx.toArray(JAVA_INT), "in-place replay, " + arena);
        assertArrayEquals(wA, w.toArray(JAVA_FLOAT), "in-place replay, " + arena);
        if (arena != Arena.global() && kind != (Supplier<Arena>) Arena::ofAuto) {
          try {
            arena.close();
          } catch (UnsupportedOperationException ignored) {  // automatic arenas
          }
        }
      }
    }
  }

  /** Runs {@code call}, expects INVALID_ARGUMENT with every fragment in the message, and outputs untouched. */
  private static void rejects(Runnable call, MemorySegment[] outputs, String... fragments) {
    byte[][] before = new byte[outputs.length][];
    for (int i = 0; i < outputs.length; i++) before[i] = outputs[i].toArray(JAVA_BYTE);
    MoeRouterException e = assertThrows(MoeRouterException.class, call::run);
    assertEquals(Status.INVALID_ARGUMENT, e.status(), e.getMessage());
    for (String f : fragments) assertTrue(e.getMessage().contains(f), "'" + e.getMessage() + "' lacks '" + f + "'");
    for (int i = 0; i < outputs.length; i++) assertArrayEquals(before[i], outputs[i].toArray(JAVA_BYTE), "output " + i + " was written");
  }

  @Test
  void rejectsBadSegmentsBeforeWritingAnything() throws Exception {
    RouterConfig rc = config(false);
    int tokens = 4;
    try (MoeRouter router = MoeRouter.create(rc, Backend.CPU); Arena arena = Arena.ofConfined()) {
      MemorySegment logits = arena.allocateFrom(JAVA_FLOAT, logitsF32(tokens * E, 2));
      MemorySegment idx = arena.allocate(JAVA_INT, tokens * K).fill((byte) 0x5a);
      MemorySegment w = arena.allocate(JAVA_FLOAT, tokens * K).fill((byte) 0x5a);
      MemorySegment[] outs = {idx, w};

      rejects(() -> MoeSegments.route(router, MemorySegment.ofArray(new float[tokens * E]), LogitsType.FP32, tokens, idx, w),
          outs, "route: logits is a heap segment");
      rejects(() -> MoeSegments.route(router, logits, LogitsType.FP32, tokens, null, w), outs, "route: outIdx must not be null");
      rejects(() -> MoeSegments.route(router, logits.asSlice(0, logits.byteSize() - 1), LogitsType.FP32, tokens, idx, w),
          outs, "route: logits holds " + (tokens * E * 4 - 1) + " bytes, needs " + tokens * E * 4);
      rejects(() -> MoeSegments.route(router, logits, LogitsType.FP32, tokens, idx, w.asSlice(4 * K)), outs,
          "route: outWeights holds");
      MemorySegment odd = arena.allocate(tokens * K * 4L + 8, 8).asSlice(2);
      rejects(() -> MoeSegments.route(router, logits, LogitsType.FP32, tokens, odd, w), new MemorySegment[] {odd, w},
          "route: outIdx address 0x", "is not aligned to 4 bytes");
      rejects(() -> MoeSegments.route(router, logits, LogitsType.FP32, -1, idx, w), outs, "tokens must be >= 0, got -1");
      // outputs that overlap an input or each other
      rejects(() -> MoeSegments.route(router, logits, LogitsType.FP32, tokens, idx, logits.asSlice(64)), outs,
          "route: outWeights [0x", "overlaps logits");
      MemorySegment both = arena.allocate(JAVA_INT, 2L * tokens * K);
      rejects(() -> MoeSegments.route(router, logits, LogitsType.FP32, tokens, both, both.asSlice(4)), new MemorySegment[] {both},
          "overlaps outIdx");
      MemorySegment rIdx = arena.allocateFrom(JAVA_INT, TestData.randomSelection(new SplittableRandom(1), tokens, K, E));
      MemorySegment shifted = arena.allocate(JAVA_INT, 2L * tokens * K);
      rejects(() -> MoeSegments.replay(router, logits, LogitsType.FP32, tokens, shifted, null, shifted.asSlice(4), w),
          new MemorySegment[] {shifted, w}, "replay: outIdx", "overlaps replayIdx");
      rejects(() -> MoeSegments.replay(router, logits, LogitsType.FP32, tokens, null, null, idx, w), outs,
          "replay: replayIdx must not be null");
      rejects(() -> MoeSegments.backward(router, logits, LogitsType.FP32, tokens, rIdx, w, logits), outs,
          "backward: gradLogits", "overlaps logits");

      // liveness: a closed arena, and a confined arena of another thread
      Arena closed = Arena.ofConfined();
      MemorySegment dead = closed.allocate(JAVA_FLOAT, (long) tokens * E);
      closed.close();
      rejects(() -> MoeSegments.route(router, dead, LogitsType.FP32, tokens, idx, w), outs,
          "route: logits belongs to an arena that is already closed");
      MemorySegment foreign;
      try {
        foreign = CompletableFuture.supplyAsync(() -> Arena.ofConfined().allocate(JAVA_INT, (long) tokens * K)).get();
      } catch (ExecutionException e) {
        throw new AssertionError(e);
      }
      MemorySegment other = foreign;
      MoeRouterException e = assertThrows(MoeRouterException.class,
          () -> MoeSegments.route(router, logits, LogitsType.FP32, tokens, other, w));
      assertTrue(e.getMessage().contains("route: outIdx is confined to another thread"), e.getMessage());

      // the router's own replay validation still applies, and its detail survives the binding
      int[] bad = TestData.randomSelection(new SplittableRandom(2), tokens, K, E);
      bad[2 * K + 1] = bad[2 * K];  // row 2 repeats an expert
      MemorySegment badIdx = arena.allocateFrom(JAVA_INT, bad);
      byte[] wBefore = w.toArray(JAVA_BYTE);
      MoeRouterException r = assertThrows(MoeRouterException.class,
          () -> MoeSegments.replay(router, logits, LogitsType.FP32, tokens, badIdx, null, idx, w));
      assertEquals(Status.INVALID_REPLAY, r.status(), r.getMessage());
      assertTrue(r.getMessage().contains("row 2"), r.getMessage());
      assertArrayEquals(wBefore, w.toArray(JAVA_BYTE), "weights written by a rejected replay");
    }
  }

  /** JNI by default; the jdk22-tests-ffm execution runs this class again with -Dmoerouter.hostCalls=ffm. */
  @Test
  void hostCallsUseTheRequestedBinding() {
    String requested = System.getProperty("moerouter.hostCalls");
    String expected = requested == null ? HostCalls.DEFAULT : requested;
    assertEquals(expected.toUpperCase(java.util.Locale.ROOT), NativeLibrary.hostCallBinding(),
        "host-call binding on " + Runtime.version());
  }
}
