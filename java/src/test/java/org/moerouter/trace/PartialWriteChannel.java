// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.WritableByteChannel;

/**
 * A channel that passes at most {@link #limit()} bytes of each write on to the file's channel: the short
 * writes a real channel may make, which the writers must loop over. Subclasses choose the limit and what
 * happens after each write (a pause, a failure budget).
 */
abstract class PartialWriteChannel implements WritableByteChannel {
  private final WritableByteChannel in;

  PartialWriteChannel(WritableByteChannel in) {
    this.in = in;
  }

  /** The most this write may pass on (at least 1). */
  abstract long limit() throws IOException;

  /** Called after each write with the bytes it passed on. */
  abstract void wrote(int n);

  @Override
  public int write(ByteBuffer src) throws IOException {
    ByteBuffer part = src.duplicate();
    part.limit(part.position() + (int) Math.min(limit(), part.remaining()));
    int n = in.write(part);
    src.position(src.position() + n);
    wrote(n);
    return n;
  }

  @Override
  public boolean isOpen() {
    return in.isOpen();
  }

  @Override
  public void close() throws IOException {
    in.close();
  }
}
