// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.zip.Checksum;

/**
 * Expert indices [rows, layers, k] as little-endian uint8 or uint16, over one heap buffer or over
 * memory-mapped chunks of whole rows (a MappedByteBuffer is limited to 2 GiB).
 */
final class IndexStore {
  final int elementBytes;
  final int rowElements; // layers * k
  final long rows;
  private final ByteBuffer[] chunks;
  private final long chunkRows;
  final boolean mapped;

  IndexStore(int elementBytes, int rowElements, long rows, ByteBuffer[] chunks, long chunkRows, boolean mapped) {
    this.mapped = mapped;
    this.elementBytes = elementBytes;
    this.rowElements = rowElements;
    this.rows = rows;
    this.chunks = chunks;
    this.chunkRows = Math.max(1, chunkRows);
    for (int i = 0; i < chunks.length; i++) chunks[i] = chunks[i].duplicate().order(ByteOrder.LITTLE_ENDIAN);
  }

  static IndexStore heap(int elementBytes, int rowElements, long rows, byte[] bytes) {
    return new IndexStore(elementBytes, rowElements, rows, new ByteBuffer[] {ByteBuffer.wrap(bytes)}, rows, false);
  }

  /**
   * Whether a stored value may be >= experts: heap stores are validated when built; a mapped file may
   * hold any byte unless the type's whole range is valid.
   */
  boolean mayExceed(int experts) {
    return mapped && experts != (elementBytes == 1 ? 256 : 65536);
  }

  /** Element {@code e} (0 .. layers*k-1) of row {@code row}. */
  int get(long row, int e) {
    ByteBuffer c = chunks[(int) (row / chunkRows)];
    int pos = (int) (((row % chunkRows) * rowElements + e) * elementBytes);
    return elementBytes == 1 ? c.get(pos) & 0xFF : c.getShort(pos) & 0xFFFF;
  }

  /** Copies elements [eFrom, eTo) of rows [rowFrom, rowTo) to dst, row after row. */
  void copy(long rowFrom, long rowTo, int eFrom, int eTo, int[] dst, int dstPos) {
    int w = eTo - eFrom;
    for (long r = rowFrom; r < rowTo; r++) {
      ByteBuffer c = chunks[(int) (r / chunkRows)];
      int pos = (int) (((r % chunkRows) * rowElements + eFrom) * elementBytes);
      if (elementBytes == 1) {
        for (int i = 0; i < w; i++) dst[dstPos + i] = c.get(pos + i) & 0xFF;
      } else {
        for (int i = 0; i < w; i++) dst[dstPos + i] = c.getShort(pos + 2 * i) & 0xFFFF;
      }
      dstPos += w;
    }
  }

  /** Feeds the raw bytes of rows [rowFrom, rowTo) to the checksum. */
  void update(Checksum sum, long rowFrom, long rowTo) {
    forEachSlice(rowFrom, rowTo, sum::update);
  }

  /** Hands out the raw little-endian bytes of rows [rowFrom, rowTo) as buffer slices. */
  void forEachSlice(long rowFrom, long rowTo, java.util.function.Consumer<ByteBuffer> sink) {
    long r = rowFrom;
    int rowBytes = rowElements * elementBytes;
    while (r < rowTo) {
      int ci = (int) (r / chunkRows);
      long inChunk = r % chunkRows;
      long n = Math.min(rowTo - r, chunkRows - inChunk);
      ByteBuffer s = chunks[ci].duplicate();
      s.limit((int) ((inChunk + n) * rowBytes)).position((int) (inChunk * rowBytes));
      sink.accept(s);
      r += n;
    }
  }
}
