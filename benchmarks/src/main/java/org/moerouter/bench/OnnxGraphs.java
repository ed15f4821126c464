// SPDX-License-Identifier: Apache-2.0
package org.moerouter.bench;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * The ONNX Runtime peer baseline's routing graphs, serialised in code (no Python here): a minimal protobuf
 * writer for the few ONNX messages they need (ModelProto, GraphProto, NodeProto, AttributeProto,
 * TensorProto, ValueInfoProto; field numbers of onnx.proto), opset 18. Every graph takes {@code logits}
 * [T, E] fp32 (T symbolic) and returns {@code weights} [T, k] (and {@code indices} [T, k] int64 for live
 * routing), as a Java engine routing with ONNX Runtime would.
 */
final class OnnxGraphs {
  private OnnxGraphs() {}

  /** Live softmax post as peers write it for Mixtral: TopK of the logits, then softmax over the k values. */
  static byte[] topkSoftmax(int experts, int k) {
    Graph g = new Graph(experts);
    g.int64("K", k);
    g.node("TopK", in("logits", "K"), out("vals", "indices"), Attr.i("axis", -1), Attr.i("largest", 1), Attr.i("sorted", 1));
    g.node("Softmax", in("vals"), out("weights"), Attr.i("axis", -1));
    return g.model(true, k);
  }

  /** Live softmax post the long way (the graph of the "Softmax -> TopK"): softmax over E, TopK, renormalise. */
  static byte[] softmaxTopk(int experts, int k) {
    Graph g = new Graph(experts);
    g.int64("K", k);
    g.int64s("axis1", -1);
    g.node("Softmax", in("logits"), out("probs"), Attr.i("axis", -1));
    g.node("TopK", in("probs", "K"), out("vals", "indices"), Attr.i("axis", -1), Attr.i("largest", 1), Attr.i("sorted", 1));
    g.node("ReduceSum", in("vals", "axis1"), out("den"), Attr.i("keepdims", 1));
    g.node("Div", in("vals", "den"), out("weights"));
    return g.model(true, k);
  }

  /** Replay, gather first: the k replayed logits ({@code idx} [T, k] int64), then softmax over them. */
  static byte[] gatherSoftmax(int experts, int k) {
    Graph g = new Graph(experts);
    g.node("GatherElements", in("logits", "idx"), out("vals"), Attr.i("axis", 1));
    g.node("Softmax", in("vals"), out("weights"), Attr.i("axis", -1));
    return g.replayModel(k);
  }

  /** Replay of a sigmoid router: the k replayed logits, sigmoid, renormalise, scale. */
  static byte[] gatherSigmoid(int experts, int k, float scale) {
    Graph g = new Graph(experts);
    g.int64s("axis1", -1);
    g.floats("eps", new long[] {}, 1e-20f);
    g.floats("scale", new long[] {}, scale);
    g.node("GatherElements", in("logits", "idx"), out("vals"), Attr.i("axis", 1));
    g.node("Sigmoid", in("vals"), out("s"));
    g.node("ReduceSum", in("s", "axis1"), out("sum"), Attr.i("keepdims", 1));
    g.node("Add", in("sum", "eps"), out("den"));
    g.node("Div", in("s", "den"), out("wn"));
    g.node("Mul", in("wn", "scale"), out("weights"));
    return g.replayModel(k);
  }

  /**
   * DeepSeek-V3 routing: S = sigmoid(L), R = S + bias, groups scored by the sum of their top-2 R, the top
   * {@code keep} groups kept (the others masked to -inf), top-k of R over the kept experts, weights = S of
   * those renormalised (+1e-20) and scaled.
   */
  static byte[] sigmoidBiasGrouped(float[] bias, int k, int groups, int keep, float scale) {
    int e = bias.length;
    Graph g = new Graph(e);
    g.floats("bias", new long[] {e}, bias);
    g.int64s("gshape", -1, groups, e / groups);
    g.int64s("eshape", -1, e);
    g.int64("two", 2);
    g.int64("keep", keep);
    g.int64("K", k);
    g.int64s("axis1", -1);
    g.int64s("axis2", 2);
    g.int64s("last", keep - 1);
    g.floats("ninf", new long[] {}, Float.NEGATIVE_INFINITY);
    g.floats("eps", new long[] {}, 1e-20f);
    g.floats("scale", new long[] {}, scale);
    g.node("Sigmoid", in("logits"), out("s"));
    g.node("Add", in("s", "bias"), out("r"));
    g.node("Reshape", in("r", "gshape"), out("rg"));
    g.node("TopK", in("rg", "two"), out("top2", "top2i"), Attr.i("axis", -1));
    g.node("ReduceSum", in("top2", "axis1"), out("gscore"), Attr.i("keepdims", 0));
    g.node("TopK", in("gscore", "keep"), out("gtop", "gtopi"), Attr.i("axis", -1));
    g.node("Gather", in("gtop", "last"), out("gcut"), Attr.i("axis", 1));
    g.node("GreaterOrEqual", in("gscore", "gcut"), out("gmask"));
    g.node("Unsqueeze", in("gmask", "axis2"), out("gmask3"));
    g.node("Where", in("gmask3", "rg", "ninf"), out("rmasked"));
    g.node("Reshape", in("rmasked", "eshape"), out("rflat"));
    g.node("TopK", in("rflat", "K"), out("rtop", "indices"), Attr.i("axis", -1));
    g.node("GatherElements", in("s", "indices"), out("ws"), Attr.i("axis", 1));
    g.node("ReduceSum", in("ws", "axis1"), out("sum"), Attr.i("keepdims", 1));
    g.node("Add", in("sum", "eps"), out("den"));
    g.node("Div", in("ws", "den"), out("wn"));
    g.node("Mul", in("wn", "scale"), out("weights"));
    return g.model(true, k);
  }

  private static String[] in(String... names) {
    return names;
  }

  private static String[] out(String... names) {
    return names;
  }

  /** One ONNX attribute, encoded. */
  static final class Attr {
    final byte[] bytes;

    private Attr(byte[] bytes) {
      this.bytes = bytes;
    }

    static Attr i(String name, long value) {
      Pb a = new Pb();
      a.string(1, name);
      a.varint(3, value);
      a.varint(20, 2);  // AttributeType INT
      return new Attr(a.bytes());
    }
  }

  /** A graph under construction: nodes and initializers, input {@code logits} [T, E]. */
  private static final class Graph {
    private final int experts;
    private final List<byte[]> nodes = new ArrayList<>();
    private final List<byte[]> inits = new ArrayList<>();
    private int count;

    Graph(int experts) {
      this.experts = experts;
    }

    void node(String op, String[] inputs, String[] outputs, Attr... attrs) {
      Pb n = new Pb();
      for (String s : inputs) n.string(1, s);
      for (String s : outputs) n.string(2, s);
      n.string(3, op + "_" + count++);
      n.string(4, op);
      for (Attr a : attrs) n.message(5, a.bytes);
      nodes.add(n.bytes());
    }

    void int64(String name, long value) {
      tensor(name, new long[] {1}, 7, values -> values.packedInt64(7, new long[] {value}));
    }

    void int64s(String name, long... values) {
      tensor(name, new long[] {values.length}, 7, t -> t.packedInt64(7, values));
    }

    void floats(String name, long[] dims, float... values) {
      tensor(name, dims, 1, t -> t.packedFloat(4, values));
    }

    private void tensor(String name, long[] dims, int type, java.util.function.Consumer<Pb> data) {
      Pb t = new Pb();
      for (long d : dims) t.varint(1, d);
      t.varint(2, type);
      data.accept(t);
      t.string(8, name);
      inits.add(t.bytes());
    }

    /** Live routing model: outputs weights [T, k] fp32 and (when {@code indices}) indices [T, k] int64. */
    byte[] model(boolean indices, int k) {
      return build(List.of(valueInfo("logits", 1, experts)), indices
          ? List.of(valueInfo("weights", 1, k), valueInfo("indices", 7, k)) : List.of(valueInfo("weights", 1, k)));
    }

    /** Replay model: inputs logits and idx [T, k] int64, output weights. */
    byte[] replayModel(int k) {
      return build(List.of(valueInfo("logits", 1, experts), valueInfo("idx", 7, k)), List.of(valueInfo("weights", 1, k)));
    }

    private byte[] build(List<byte[]> inputs, List<byte[]> outputs) {
      Pb graph = new Pb();
      for (byte[] n : nodes) graph.message(1, n);
      graph.string(2, "moe_routing");
      for (byte[] t : inits) graph.message(5, t);
      for (byte[] v : inputs) graph.message(11, v);
      for (byte[] v : outputs) graph.message(12, v);
      Pb opset = new Pb();
      opset.string(1, "");
      opset.varint(2, 18);
      Pb model = new Pb();
      model.varint(1, 8);  // IR version 8
      model.string(2, "moe-router-bench");
      model.message(7, graph.bytes());
      model.message(8, opset.bytes());
      return model.bytes();
    }

    /** ValueInfoProto of a [T, cols] tensor of ONNX element type {@code type} (1 float, 7 int64). */
    private static byte[] valueInfo(String name, int type, int cols) {
      Pb rows = new Pb();
      rows.string(2, "T");  // dim_param
      Pb width = new Pb();
      width.varint(1, cols);  // dim_value
      Pb shape = new Pb();
      shape.message(1, rows.bytes());
      shape.message(1, width.bytes());
      Pb tensor = new Pb();
      tensor.varint(1, type);
      tensor.message(2, shape.bytes());
      Pb typeProto = new Pb();
      typeProto.message(1, tensor.bytes());
      Pb v = new Pb();
      v.string(1, name);
      v.message(2, typeProto.bytes());
      return v.bytes();
    }
  }

  /** Protobuf wire format, the three wire types used here (varint, length-delimited, packed fixed32). */
  static final class Pb {
    private final ByteArrayOutputStream out = new ByteArrayOutputStream();

    private void raw(long v) {
      while ((v & ~0x7fL) != 0) {
        out.write((int) ((v & 0x7f) | 0x80));
        v >>>= 7;
      }
      out.write((int) v);
    }

    void varint(int field, long value) {
      raw((long) field << 3);
      raw(value);
    }

    void message(int field, byte[] bytes) {
      raw(((long) field << 3) | 2);
      raw(bytes.length);
      out.write(bytes, 0, bytes.length);
    }

    void string(int field, String s) {
      message(field, s.getBytes(StandardCharsets.UTF_8));
    }

    void packedInt64(int field, long[] values) {
      Pb p = new Pb();
      for (long v : values) p.raw(v);
      message(field, p.bytes());
    }

    void packedFloat(int field, float[] values) {
      byte[] b = new byte[4 * values.length];
      for (int i = 0; i < values.length; i++) {
        int bits = Float.floatToRawIntBits(values[i]);
        for (int j = 0; j < 4; j++) b[4 * i + j] = (byte) (bits >>> (8 * j));
      }
      message(field, b);
    }

    byte[] bytes() {
      return out.toByteArray();
    }
  }
}
