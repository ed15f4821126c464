// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama.bench;

import java.util.Locale;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Warmup;

/**
 * What the two layer benchmarks share, so that {@link ShareReport} can pair their rows: the run profile and
 * the grid of layer shapes and token counts (JMH reads both from the superclass).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 4, time = 1)
@Measurement(iterations = 3, time = 1)
@Fork(1)
public abstract class LayerGrid {
  @Param({"MIXTRAL", "E64K8"})
  public String shape;

  @Param({"1", "512"})
  public int tokens;

  /** The layer shape {@link #shape} names. */
  BenchLayer.Shape layerShape() {
    return BenchLayer.Shape.valueOf(shape.toUpperCase(Locale.ROOT));
  }
}
