// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import java.util.Arrays;
import java.util.Objects;
import org.moerouter.RoutingAgreement;

/**
 * Routing agreement between two traces of the same tokens ({@link RoutingAgreement}), streamed in chunks,
 * so that memory-mapped traces of any size compare in bounded memory.
 *
 * <pre>{@code
 * RoutingAgreement.Result r = TraceMetrics.agreement(TraceFiles.open(rollout), TraceFiles.open(training));
 * System.out.printf("%.4f of tokens differ in some layer%n", r.differingTokenFraction());
 * }</pre>
 */
public final class TraceMetrics {
  private TraceMetrics() {}

  private static final int CHUNK_INTS = 1 << 20;

  /**
   * Agreement of two traces on the fastest engine; see
   * {@link #agreement(RoutingTrace, RoutingTrace, RoutingAgreement.Engine)}.
   *
   * @param a one trace
   * @param b the other, with the same k, layer ids and sample offsets
   * @return the counts over the tokens both traces recorded
   * @throws org.moerouter.MoeRouterException when the traces do not describe the same tokens and layers
   */
  public static RoutingAgreement.Result agreement(RoutingTrace a, RoutingTrace b) {
    return agreement(a, b, RoutingAgreement.Engine.AUTO);
  }

  /**
   * Agreement of two traces with the same k, layer ids and sample offsets (E may differ, for example a
   * converted .npy with inferred E; the larger bounds the indices). Tokens that either trace did not record
   * (mask 0) are left out: {@code tokens()} of the result counts the compared ones.
   *
   * @param a one trace
   * @param b the other, with the same k, layer ids and sample offsets
   * @param engine where the counts are computed
   * @return the counts over the tokens both traces recorded
   * @throws org.moerouter.MoeRouterException when the traces do not describe the same tokens and layers
   * @throws TraceFormatException when a file-backed trace holds an index out of range
   */
  public static RoutingAgreement.Result agreement(RoutingTrace a, RoutingTrace b, RoutingAgreement.Engine engine) {
    Objects.requireNonNull(a, "a");
    Objects.requireNonNull(b, "b");
    if (a.topK() != b.topK()) throw RoutingTrace.invalid("traces differ in k: " + a.topK() + " vs " + b.topK());
    if (!Arrays.equals(a.layerKeys(), b.layerKeys()))
      throw RoutingTrace.invalid("traces differ in layer ids: " + Arrays.toString(a.layerKeys()) + " vs " + Arrays.toString(b.layerKeys()));
    if (!Arrays.equals(a.offsetsUnsafe(), b.offsetsUnsafe()))
      throw RoutingTrace.invalid("traces differ in samples or tokens: " + a.samples() + " samples / " + a.totalTokens()
          + " tokens vs " + b.samples() + " / " + b.totalTokens());
    int w = a.layers() * a.topK();
    int experts = Math.max(a.experts(), b.experts());
    RoutingAgreement.Accumulator acc = RoutingAgreement.accumulator(a.layers(), a.topK(), experts, engine);
    int chunk = Math.max(1, CHUNK_INTS / w);
    int[] x = new int[chunk * w], y = new int[chunk * w];
    boolean masked = a.hasMask() || b.hasMask();
    byte[] ma = masked ? new byte[chunk] : null, mb = masked ? new byte[chunk] : null;
    for (long t = 0; t < a.totalTokens(); t += chunk) {
      long end = Math.min(a.totalTokens(), t + chunk);
      a.copyTokens(t, end, 0, a.layers(), x, 0);
      b.copyTokens(t, end, 0, b.layers(), y, 0);
      int n = (int) (end - t);
      if (masked) {
        // Rows either trace did not record hold placeholders: leave them out of the comparison.
        a.copyMask(t, end, ma, 0);
        b.copyMask(t, end, mb, 0);
        int kept = 0;
        for (int r = 0; r < n; r++) {
          if (ma[r] == 0 || mb[r] == 0) continue;
          if (kept != r) {
            System.arraycopy(x, r * w, x, kept * w, w);
            System.arraycopy(y, r * w, y, kept * w, w);
          }
          kept++;
        }
        n = kept;
      }
      acc.add(x, y, n);
    }
    return acc.result();
  }
}
