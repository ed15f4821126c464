// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * For test classes that walk the native CPU backend's instruction-set levels through its test hook: skips the
 * class (with the reason) where the native library did not load, and lifts the cap after the class, because the
 * cap is process-wide and every later test must run at this CPU's own level. Use with
 * {@code @ExtendWith(CpuIsaCap.class)}.
 */
final class CpuIsaCap implements BeforeAllCallback, AfterAllCallback {
  @Override
  public void beforeAll(ExtensionContext context) {
    Assumptions.assumeTrue(NativeLibrary.loaded(), "native library not loaded");
  }

  @Override
  public void afterAll(ExtensionContext context) {
    if (NativeLibrary.loaded()) RouterNative.moe_jni_test_cpu_isa(-1);
  }

  /** This CPU's highest level (or the one the environment caps it to). */
  static int top() {
    return RouterNative.moe_jni_test_cpu_isa(-1);
  }

  /** Caps the backend at {@code level} and checks that it took it. */
  static void use(int level) {
    assertEquals(level, RouterNative.moe_jni_test_cpu_isa(level), "level in use");
  }
}
