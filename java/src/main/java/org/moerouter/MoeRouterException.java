// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/** The one exception type of moe-router: a failed routing call or a rejected input. */
public class MoeRouterException extends RuntimeException {
  private static final long serialVersionUID = 1L;
  private final Status status;

  public MoeRouterException(Status status, String message) {
    super(message);
    this.status = status;
  }

  public MoeRouterException(Status status, String message, Throwable cause) {
    super(message, cause);
    this.status = status;
  }

  public Status status() {
    return status;
  }
}
