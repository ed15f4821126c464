// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.util.ArrayList;
import java.util.List;

/** Host backends every machine must test; the native one must be present (it ships in the jar). */
final class Backends {
  private Backends() {}

  static List<Backend> host() {
    List<Backend> list = new ArrayList<>();
    list.add(Backend.JAVA);
    list.add(Backend.CPU);
    return list;
  }

  /** |actual - expected| <= rel * |expected| + abs. */
  static boolean close(double actual, double expected, double rel, double abs) {
    return Math.abs(actual - expected) <= rel * Math.abs(expected) + abs;
  }
}
