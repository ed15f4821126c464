// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/** How router logits become scores (ROUTING_SPEC.md section 1). */
public enum ScoreFunction {
  SOFTMAX(0),
  SIGMOID(1);

  final int code;

  ScoreFunction(int code) {
    this.code = code;
  }
}
