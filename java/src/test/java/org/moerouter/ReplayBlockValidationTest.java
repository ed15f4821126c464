// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * The CPU backend's replay validation on full blocks of rows (docs/cpu-design.md, "Replay"): the AVX-512 check
 * takes 16 rows at once (one row per lane, every pair of positions compared on all lanes), the AVX2 one a row per
 * vector, and a row either flags goes to the exact scalar check that names it. ReplayValidationTest calls 3 rows,
 * which never fill a 16-row block. Here every k the vector checks take (1..16), a bad row at every lane of the
 * middle block and a duplicate at every pair of positions (or an out-of-range index at every position), with a
 * second bad row later in the same block: the call must name the first one and write nothing. At every
 * instruction-set level this machine has (a test hook caps the level).
 */
@ExtendWith(CpuIsaCap.class)
class ReplayBlockValidationTest {
  static final int E = 64, BLOCK = 16, T = 3 * BLOCK;

  @Test
  void everyBadLaneAndPositionIsNamedFirstAndNothingIsWritten() {
    final int top = CpuIsaCap.top();
    for (int level = 0; level <= top; level++) {
      CpuIsaCap.use(level);
      for (int k = 1; k <= 16; k++) {
        float[] l = ReplayTest.logits(T, E, k);
        int[] good = ReplayValidationTest.validRows(T, k, E);
        try (MoeRouter r = MoeRouter.create(RouterConfig.builder(E, k).build(), Backend.CPU)) {
          int[] idx = new int[T * k];
          float[] w = new float[T * k];
          r.replay(l, T, good, null, idx, w);  // the unplanted rows are valid
          for (int lane = 0; lane < BLOCK; lane++) {
            final int row = BLOCK + lane;
            for (int j = 0; j < k; j++) {
              for (int m = 0; m < j; m++) {
                int[] bad = plantLater(good, k, row);
                bad[row * k + j] = bad[row * k + m];
                expectRejected(r, l, bad, k, "level " + level + " k=" + k + " lane " + lane + " positions " + m + "," + j,
                    "row " + row + ": expert " + bad[row * k + m] + " appears twice (positions " + m + " and " + j + ")");
              }
              for (int v : new int[] {E, -2}) {
                int[] bad = plantLater(good, k, row);
                bad[row * k + j] = v;
                expectRejected(r, l, bad, k, "level " + level + " k=" + k + " lane " + lane + " position " + j + " = " + v,
                    "row " + row + ": expert " + v + " at position " + j + " is out of range [0, " + E + ")");
              }
            }
          }
        }
      }
    }
  }

  /** good with the block's last row made invalid after `row` (a later bad lane), unless row is that last row. */
  static int[] plantLater(int[] good, int k, int row) {
    int[] bad = good.clone();
    final int last = 2 * BLOCK - 1;
    if (row < last) bad[last * k] = E + 5;
    return bad;
  }

  static void expectRejected(MoeRouter r, float[] l, int[] bad, int k, String where, String message) {
    int[] idx = new int[T * k];
    float[] w = new float[T * k];
    Arrays.fill(idx, -7);
    Arrays.fill(w, -7f);
    MoeRouterException ex = assertThrows(MoeRouterException.class, () -> r.replay(l, T, bad, null, idx, w), where);
    assertEquals(Status.INVALID_REPLAY, ex.status(), where);
    assertEquals("replay failed: invalid replay indices: " + message, ex.getMessage(), where);
    for (int i = 0; i < idx.length; i++) {
      if (idx[i] != -7) assertEquals(-7, idx[i], where + ": index " + i + " written");
      if (w[i] != -7f) assertEquals(-7f, w[i], where + ": weight " + i + " written");
    }
  }
}
