// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/** Where routing runs. {@link #AUTO} picks CUDA, then native CPU, then pure Java; {@link #NATIVE} never Java. */
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
