// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/** Where routing runs. {@link #AUTO} picks CUDA, then native CPU, then pure Java. */
public enum Backend {
  /** Pure-Java reference implementation; always available. */
  JAVA,
  /** Native, multi-threaded CPU kernels (JNI). */
  CPU,
  /** CUDA kernels; device pointers and streams, or host arrays staged through the device. */
  CUDA,
  /** The fastest backend available on this machine. */
  AUTO
}
