// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.util.random.RandomGenerator;

/** Random inputs shared by the tests of every package. */
public final class TestData {
  private TestData() {}

  /** {@code rows} rows of {@code k} distinct experts in [0, experts), uniformly drawn. */
  public static int[] randomSelection(RandomGenerator rnd, int rows, int k, int experts) {
    int[] out = new int[rows * k];
    int[] perm = new int[experts];
    for (int i = 0; i < experts; i++) perm[i] = i;
    for (int t = 0; t < rows; t++)
      for (int j = 0; j < k; j++) {
        int s = j + rnd.nextInt(experts - j);
        int tmp = perm[j];
        perm[j] = perm[s];
        perm[s] = tmp;
        out[t * k + j] = perm[j];
      }
    return out;
  }
}
