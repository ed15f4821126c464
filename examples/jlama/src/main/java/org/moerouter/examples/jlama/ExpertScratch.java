// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama;

import com.github.tjake.jlama.safetensors.DType;
import com.github.tjake.jlama.tensor.AbstractTensor;
import com.github.tjake.jlama.tensor.BFloat16BufferTensor;
import com.github.tjake.jlama.tensor.FloatBufferTensor;
import com.github.tjake.jlama.tensor.TensorShape;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * Working memory of the grouped expert pass, shared by the MoE layers of one model (they run one after
 * the other): the gathered input rows of one expert [n, D], its two up-projections [n, F] and its output
 * [n, D], handed out as jlama tensors over slices of direct buffers that grow to the largest batch seen.
 *
 * <p>Why not jlama's tensor cache: it keys tensors by shape, and the row count of an expert changes with
 * every call, so it would keep a tensor per count seen. Little-endian, as jlama's vector loads read it.
 */
final class ExpertScratch {
  private ByteBuffer input = ByteBuffer.allocateDirect(0);
  private ByteBuffer up1 = ByteBuffer.allocateDirect(0);
  private ByteBuffer up3 = ByteBuffer.allocateDirect(0);
  private ByteBuffer output = ByteBuffer.allocateDirect(0);
  private final int dim;
  private final int hidden;

  ExpertScratch(int dim, int hidden) {
    this.dim = dim;
    this.hidden = hidden;
  }

  /** Whether rows of {@code t} can be gathered by plain copies (dense fp32 or bf16, no block scales). */
  static boolean gatherable(AbstractTensor t) {
    return (t.dType() == DType.F32 || t.dType() == DType.BF16) && t.dims() == 2 && !t.shape().isSparse();
  }

  /** Makes room for experts of up to {@code rows} rows with inputs of {@code inputType}. */
  void ensure(int rows, DType inputType) {
    input = grow(input, (long) rows * dim * inputType.size());
    up1 = grow(up1, (long) rows * hidden * Float.BYTES);
    up3 = grow(up3, (long) rows * hidden * Float.BYTES);
    output = grow(output, (long) rows * dim * Float.BYTES);
  }

  /** Copies rows {@code rowsOf[from .. from+n)} of {@code src} [T, D] into the input view [n, D] and returns it. */
  AbstractTensor gather(AbstractTensor src, int[] rowsOf, int from, int n) {
    int eb = src.dType().size();
    long rowBytes = (long) dim * eb;
    MemorySegment s = src.getMemorySegment();
    MemorySegment d = MemorySegment.ofBuffer(input);
    for (int j = 0; j < n; j++)
      MemorySegment.copy(s, src.getMemorySegmentOffset(src.getOffset(rowsOf[from + j], 0)), d, j * rowBytes, rowBytes);
    TensorShape shape = TensorShape.of(n, dim);
    if (src.dType() == DType.BF16)
      return new BFloat16BufferTensor("moe-input", input.slice(0, n * dim * 2).order(ByteOrder.LITTLE_ENDIAN).asShortBuffer(), shape, true);
    return new FloatBufferTensor("moe-input", floats(input, n * dim), shape, true);
  }

  FloatBufferTensor up1(int n) {
    return new FloatBufferTensor("moe-w1", floats(up1, n * hidden), TensorShape.of(n, hidden), true);
  }

  FloatBufferTensor up3(int n) {
    return new FloatBufferTensor("moe-w3", floats(up3, n * hidden), TensorShape.of(n, hidden), true);
  }

  FloatBufferTensor output(int n) {
    return new FloatBufferTensor("moe-w2", floats(output, n * dim), TensorShape.of(n, dim), true);
  }

  private static java.nio.FloatBuffer floats(ByteBuffer b, int n) {
    return b.slice(0, n * Float.BYTES).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer();
  }

  private static ByteBuffer grow(ByteBuffer b, long bytes) {
    if (b.capacity() >= bytes) return b;
    if (bytes > Integer.MAX_VALUE) throw new IllegalArgumentException("expert working buffer of " + bytes + " bytes exceeds 2 GiB");
    // 1.5x so that a slowly growing batch does not reallocate every call.
    return ByteBuffer.allocateDirect((int) Math.min(Integer.MAX_VALUE, Math.max(bytes, b.capacity() + b.capacity() / 2)));
  }
}
