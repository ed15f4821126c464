// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * Where routing runs. {@link #AUTO} picks CUDA, then native CPU, then pure Java; {@link #NATIVE} never Java.
 * Every backend computes the same indices, bit for bit (docs/semantics.md).
 *
 * <pre>{@code
 * MoeRouter fastest = MoeRouter.create(config);                  // AUTO
 * MoeRouter strict = MoeRouter.create(config, Backend.NATIVE);  // throws instead of falling back to Java
 * String why = MoeRouter.unavailableReason(Backend.CUDA);       // null when available
 * }</pre>
 *
 * <p>Traps: {@link #AUTO} and {@link #NATIVE} are requests, not results; {@code router.backend()} says which
 * one a router runs on. The native backends need the JNI library of a native jar on the class path (README,
 * "Adoption"); without it AUTO routes in Java, 4-8 times slower, and logs why once.
 */
public enum Backend {
  /** Pure-Java reference implementation; always available. */
  JAVA,
  /** Native, multi-threaded CPU kernels (JNI). */
  CPU,
  /** CUDA kernels; device pointers and streams, or host arrays staged through the device. */
  CUDA,
  /** CUDA if available, else native CPU; creating a router throws if neither is (no Java fallback). */
  NATIVE,
  /**
   * The fastest backend available on this machine: CUDA, then CPU, then JAVA. Falling back to JAVA is
   * logged once (System.Logger "org.moerouter", WARNING) with the reason; with
   * {@code -Dmoerouter.requireNative=true} AUTO behaves as {@link #NATIVE} and throws instead.
   */
  AUTO
}
