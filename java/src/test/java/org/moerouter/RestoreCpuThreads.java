// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * Gives each test of a class back the CPU pool's thread count it found: the count is process-wide, so a
 * test that sets it would otherwise change the thread count (and the chunking) of every test after it.
 * Use with {@code @ExtendWith(RestoreCpuThreads.class)}; it loads the native library.
 */
final class RestoreCpuThreads implements BeforeEachCallback, AfterEachCallback {
  private static final ExtensionContext.Namespace NS = ExtensionContext.Namespace.create(RestoreCpuThreads.class);

  @Override
  public void beforeEach(ExtensionContext context) {
    context.getStore(NS).put("threads", MoeRouter.cpuThreads());
  }

  @Override
  public void afterEach(ExtensionContext context) {
    Integer saved = context.getStore(NS).remove("threads", Integer.class);
    if (saved != null) MoeRouter.setCpuThreads(saved);
  }
}
