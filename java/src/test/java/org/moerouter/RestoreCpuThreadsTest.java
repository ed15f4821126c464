// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.extension.ExtendWith;

/** {@link RestoreCpuThreads}: a test that changes the pool's thread count leaves the next test the old one. */
@ExtendWith(RestoreCpuThreads.class)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class RestoreCpuThreadsTest {
  private static int before;

  @BeforeAll
  static void needsNative() {
    // Without the library the count is always 1 and setting it does nothing: there is nothing to restore.
    Assumptions.assumeTrue(NativeLibrary.loaded(), "native library not loaded");
    before = MoeRouter.cpuThreads();
  }

  @Test
  @Order(1)
  void aTestChangesTheThreadCount() {
    MoeRouter.setCpuThreads(before + 2);
    assertEquals(before + 2, MoeRouter.cpuThreads());
  }

  @Test
  @Order(2)
  void theNextTestFindsTheCountItHadBefore() {
    assertEquals(before, MoeRouter.cpuThreads(), "the thread count set by the previous test was not restored");
  }
}
