// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.*;

import java.util.Random;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

class RoutingAgreementTest {
  static int[] rows(Random r, int experts, int k, int n) {
    int[] out = new int[n * k];
    for (int row = 0; row < n; row++) {
      int filled = 0;
      while (filled < k) {
        int e = r.nextInt(experts);
        boolean dup = false;
        for (int j = 0; j < filled; j++) dup |= out[row * k + j] == e;
        if (!dup) out[row * k + filled++] = e;
      }
    }
    return out;
  }

  /** b = a with some rows perturbed (replace one expert or shuffle order). */
  static int[] perturb(Random r, int[] a, int experts, int k) {
    int[] b = a.clone();
    for (int row = 0; row < a.length / k; row++) {
      int kind = r.nextInt(4);
      if (kind == 0) { // replace an expert by one not in the row
        int e;
        boolean in;
        do {
          e = r.nextInt(experts);
          in = false;
          for (int j = 0; j < k; j++) in |= b[row * k + j] == e;
        } while (in);
        b[row * k + r.nextInt(k)] = e;
      } else if (kind == 1 && k > 1) { // same set, other order
        int t = b[row * k];
        b[row * k] = b[row * k + k - 1];
        b[row * k + k - 1] = t;
      }
    }
    return b;
  }

  /** Direct count from the definitions. */
  static long[] direct(int[] a, int[] b, int tokens, int layers, int k, int layer) {
    long differ = 0, overlap = 0;
    for (int t = 0; t < tokens; t++) {
      java.util.Set<Integer> sa = new java.util.HashSet<>(), sb = new java.util.HashSet<>();
      for (int j = 0; j < k; j++) {
        sa.add(a[(t * layers + layer) * k + j]);
        sb.add(b[(t * layers + layer) * k + j]);
      }
      if (!sa.equals(sb)) differ++;
      sa.retainAll(sb);
      overlap += sa.size();
    }
    return new long[] {differ, overlap};
  }

  @Test
  void matchesADirectCountOnBothEngines() {
    Random r = new Random(5);
    int tokens = 300, layers = 4, k = 6, experts = 64;
    int[] a = rows(r, experts, k, tokens * layers);
    int[] b = perturb(r, a, experts, k);
    RoutingAgreement.Result java = RoutingAgreement.compare(a, b, tokens, layers, k, experts, RoutingAgreement.Engine.JAVA);
    long anyDiffer = 0;
    for (int t = 0; t < tokens; t++) {
      boolean any = false;
      for (int l = 0; l < layers; l++) any |= direct(a, b, t + 1, layers, k, l)[0] - direct(a, b, t, layers, k, l)[0] > 0;
      if (any) anyDiffer++;
    }
    long totalDiff = 0;
    for (int l = 0; l < layers; l++) {
      long[] d = direct(a, b, tokens, layers, k, l);
      totalDiff += d[0];
      assertEquals(d[0], java.differingRows(l));
      assertEquals(d[1], java.overlapTotal(l));
      assertEquals((double) d[0] / tokens, java.differingRowFraction(l), 1e-12);
      assertEquals((double) d[1] / (tokens * k), java.meanOverlap(l), 1e-12);
    }
    assertTrue(totalDiff > 0 && totalDiff < tokens * layers);
    assertEquals(anyDiffer, java.differingTokens());
    assertEquals((double) totalDiff / (tokens * layers), java.differingRowFraction(), 1e-12);
    if (NativeLibrary.loaded()) {
      RoutingAgreement.Result nat = RoutingAgreement.compare(a, b, tokens, layers, k, experts, RoutingAgreement.Engine.NATIVE);
      assertEquals(java, nat);
      RoutingAgreement.Result one = RoutingAgreement.compare(a, b, tokens * layers, 1, k, experts, RoutingAgreement.Engine.NATIVE);
      assertEquals(RoutingAgreement.compare(a, b, tokens * layers, 1, k, experts, RoutingAgreement.Engine.JAVA), one);
      assertEquals(totalDiff, one.differingRows(0));
    }
  }

  @Test
  void nativeLibraryLoadsHere() {
    // The build compiles the native library; if it did not load, the native engine is not being tested.
    Assumptions.assumeTrue(NativeLibrary.loaded(), "native library not loaded: " + NativeLibrary.loadFailure());
    assertTrue(RoutingAgreement.accumulator(1, 1, 1, RoutingAgreement.Engine.AUTO).isNative());
  }

  @Test
  void chunkedAccumulationEqualsOneShot() {
    Random r = new Random(9);
    int layers = 3, k = 2, experts = 8;
    int[] a = rows(r, experts, k, 100 * layers), b = perturb(r, a, experts, k);
    for (RoutingAgreement.Engine eng : engines()) {
      RoutingAgreement.Accumulator acc = RoutingAgreement.accumulator(layers, k, experts, eng);
      acc.add(java.util.Arrays.copyOfRange(a, 0, 40 * layers * k), java.util.Arrays.copyOfRange(b, 0, 40 * layers * k), 40);
      acc.add(java.util.Arrays.copyOfRange(a, 40 * layers * k, a.length), java.util.Arrays.copyOfRange(b, 40 * layers * k, b.length), 60);
      assertEquals(RoutingAgreement.compare(a, b, 100, layers, k, experts, RoutingAgreement.Engine.JAVA), acc.result());
    }
  }

  static RoutingAgreement.Engine[] engines() {
    return NativeLibrary.loaded() ? new RoutingAgreement.Engine[] {RoutingAgreement.Engine.JAVA, RoutingAgreement.Engine.NATIVE}
        : new RoutingAgreement.Engine[] {RoutingAgreement.Engine.JAVA};
  }

  @Test
  void invalidRowsNameSelectionTokenAndLayerOnBothEngines() {
    int[] a = {0, 1, 2, 3, 4, 5, 6, 7};
    int[] b = {0, 1, 2, 3, 4, 4, 6, 7}; // token 1 layer 0 repeats 4
    int[] c = {0, 1, 2, 9, 4, 5, 6, 7}; // token 0 layer 1 out of range
    for (RoutingAgreement.Engine eng : engines()) {
      MoeRouterException e = assertThrows(MoeRouterException.class, () -> RoutingAgreement.compare(a, b, 2, 2, 2, 8, eng));
      assertEquals(Status.INVALID_REPLAY, e.status());
      assertEquals("routing agreement: selection b token 1 layer 0: expert 4 appears twice", e.getMessage());
      e = assertThrows(MoeRouterException.class, () -> RoutingAgreement.compare(c, a, 2, 2, 2, 8, eng));
      assertEquals("routing agreement: selection a token 0 layer 1: expert 9 out of range [0, 8)", e.getMessage());
    }
  }

  @Test
  void emptyAndIdentical() {
    RoutingAgreement.Result r = RoutingAgreement.compare(new int[0], new int[0], 0, 2, 2, 4);
    assertEquals(0, r.differingTokenFraction());
    assertEquals(1, r.meanOverlap());
    int[] a = {0, 1, 2, 3};
    RoutingAgreement.Result same = RoutingAgreement.compare(a, new int[] {1, 0, 3, 2}, 2, 1, 2, 4);
    assertEquals(0, same.differingRows());
    assertEquals(1.0, same.meanOverlap());
    RoutingAgreement.Result half = RoutingAgreement.compare(a, new int[] {1, 3, 3, 2}, 2, 1, 2, 4);
    assertEquals(0.5, half.differingRowFraction(0));
    assertEquals(0.75, half.meanOverlap(0));
  }
}
