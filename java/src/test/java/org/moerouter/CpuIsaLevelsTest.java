// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * Every instruction-set level of the native CPU kernels gives the pure-Java reference's bits (docs/cpu-design.md):
 * the AVX-512 kernels where the CPU has them, the AVX2 ones, and the scalar code, each forced in turn through a
 * test hook on this one machine, so that a build machine with AVX-512 still tests the AVX2 path the artifact runs
 * on older CPUs, and the other way round. Random configurations and shapes as in BackendEquivalenceTest (live,
 * replay with -1 and masked rows, invalid replay rows, backward, every dtype and non-finite mode), plus calls
 * large enough for the thread pool and rows in blocks of 16 with a tail.
 */
@ExtendWith(CpuIsaCap.class)
class CpuIsaLevelsTest {
  static final int CONFIGS_PER_LEVEL = 500;

  @Test
  void everyLevelMatchesJava() {
    final int top = CpuIsaCap.top();  // this CPU's level (or the environment's cap)
    for (int level = 0; level <= top; level++) {
      CpuIsaCap.use(level);
      SplittableRandom rnd = new SplittableRandom(20261129L + level);
      for (int iter = 0; iter < CONFIGS_PER_LEVEL; iter++) {
        RouterConfig config = BackendEquivalenceTest.randomConfig(rnd);
        int tokens = BackendEquivalenceTest.randomTokens(rnd, config.experts());
        LogitsType type = LogitsType.values()[rnd.nextInt(3)];
        int mode = rnd.nextInt(7);
        BackendEquivalenceTest.compare(config, tokens, type, mode, rnd,
            "level " + level + ", case " + iter + ": " + config + ", T=" + tokens + ", " + type + ", mode " + mode);
      }
      // The e64k6 / e128k8 / e256k8g / e512k10 shapes of the benchmarks, through the pool.
      RouterConfig[] big = {RouterConfig.builder(64, 6).build(), RouterConfig.builder(128, 8).build(),
          RouterConfig.builder(256, 8).scoreFunction(ScoreFunction.SIGMOID)
              .expertBias(BackendEquivalenceTest.randomBias(rnd, 256)).groups(8, 4).scale(2.5f).build(),
          RouterConfig.builder(512, 10).build(),
          RouterConfig.builder(96, 16).scoreFunction(ScoreFunction.SQRTSOFTPLUS).build()};
      for (RouterConfig c : big)
        for (LogitsType t : LogitsType.values())
          BackendEquivalenceTest.compare(c, 1000 + rnd.nextInt(40), t, rnd.nextInt(7), rnd, "level " + level + ", " + c + " " + t);
    }
  }
}
