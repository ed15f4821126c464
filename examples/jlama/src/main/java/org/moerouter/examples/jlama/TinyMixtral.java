// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.SplittableRandom;

/**
 * Writes a small random Mixtral checkpoint in the Hugging Face layout jlama loads: {@code config.json}
 * ({@code model_type: mixtral}), {@code model.safetensors} with the Mixtral tensor names
 * ({@code model.layers.N.block_sparse_moe.gate.weight}, {@code ...experts.E.w1/w2/w3.weight}, ...) and a
 * byte-fallback BPE {@code tokenizer.json} of the Llama/Mistral kind. Nothing is downloaded; the same seed
 * gives the same bytes.
 *
 * <pre>{@code
 * Path dir = TinyMixtral.builder().layers(4).experts(8).topK(2).seed(7).bf16(true).write(tmp);
 * }</pre>
 *
 * Sizes are multiples of 64 so every Vector API kernel of jlama (AVX2, AVX-512, NEON) takes whole vectors.
 */
public final class TinyMixtral {
  private int hidden = 128;
  private int intermediate = 256;
  private int layers = 4;
  private int heads = 4;
  private int kvHeads = 2;
  private int experts = 8;
  private int topK = 2;
  private int context = 1024;
  private long seed = 1;
  private boolean bf16 = true;
  private float gateStd = 1f;

  private TinyMixtral() {}

  public static TinyMixtral builder() {
    return new TinyMixtral();
  }

  public TinyMixtral hidden(int d) {
    this.hidden = d;
    return this;
  }

  public TinyMixtral intermediate(int f) {
    this.intermediate = f;
    return this;
  }

  public TinyMixtral layers(int n) {
    this.layers = n;
    return this;
  }

  public TinyMixtral heads(int heads, int kvHeads) {
    this.heads = heads;
    this.kvHeads = kvHeads;
    return this;
  }

  public TinyMixtral experts(int e) {
    this.experts = e;
    return this;
  }

  public TinyMixtral topK(int k) {
    this.topK = k;
    return this;
  }

  public TinyMixtral context(int tokens) {
    this.context = tokens;
    return this;
  }

  public TinyMixtral seed(long seed) {
    this.seed = seed;
    return this;
  }

  /** Store weights as bf16 (as Mixtral checkpoints are) rather than fp32. */
  public TinyMixtral bf16(boolean bf16) {
    this.bf16 = bf16;
    return this;
  }

  /** Standard deviation of the router logits for a unit-RMS input (default 1). */
  public TinyMixtral gateStd(float std) {
    this.gateStd = std;
    return this;
  }

  /** Writes the three files into {@code dir} (created if needed) and returns it. */
  public Path write(Path dir) throws IOException {
    check(hidden % 64 == 0 && intermediate % 64 == 0, "hidden (" + hidden + ") and intermediate (" + intermediate
        + ") must be multiples of 64");
    check(heads > 0 && kvHeads > 0 && heads % kvHeads == 0 && hidden % heads == 0 && (hidden / heads) % 32 == 0,
        "heads " + heads + "/" + kvHeads + " must divide hidden " + hidden + " into head sizes that are multiples of 32");
    check(layers > 0 && experts >= topK && topK > 0, "need layers > 0 and 0 < topK <= experts");
    Files.createDirectories(dir);
    Vocabulary vocab = Vocabulary.build();
    writeConfig(dir.resolve("config.json"), vocab.size());
    vocab.writeTokenizer(dir.resolve("tokenizer.json"));
    writeWeights(dir.resolve("model.safetensors"), vocab.size());
    return dir;
  }

  private void writeConfig(Path file, int vocabSize) throws IOException {
    ObjectMapper om = new ObjectMapper();
    ObjectNode c = om.createObjectNode();
    c.putArray("architectures").add("MixtralForCausalLM");
    c.put("model_type", "mixtral");
    c.put("hidden_size", hidden);
    c.put("intermediate_size", intermediate);
    c.put("num_attention_heads", heads);
    c.put("num_key_value_heads", kvHeads);
    c.put("num_hidden_layers", layers);
    c.put("max_position_embeddings", context);
    c.put("rms_norm_eps", 1e-5);
    c.put("vocab_size", vocabSize);
    c.put("bos_token_id", Vocabulary.BOS);
    c.put("eos_token_id", Vocabulary.EOS);
    c.put("rope_theta", 1e6);
    c.put("hidden_act", "silu");
    c.put("num_local_experts", experts);
    c.put("num_experts_per_tok", topK);
    c.put("tie_word_embeddings", false);
    c.put("torch_dtype", bf16 ? "bfloat16" : "float32");
    om.writerWithDefaultPrettyPrinter().writeValue(file.toFile(), c);
  }

  private void writeWeights(Path file, int vocabSize) throws IOException {
    SplittableRandom rnd = new SplittableRandom(seed);
    int hd = hidden / heads;
    List<Tensor> ts = new ArrayList<>();
    // Scales keep activations O(1) through the random network: 1/sqrt(fan_in) for projections.
    ts.add(Tensor.gaussian("model.embed_tokens.weight", rnd, 1f, vocabSize, hidden));
    for (int l = 0; l < layers; l++) {
      String b = "model.layers." + l + ".";
      ts.add(Tensor.norm(b + "input_layernorm.weight", rnd, hidden));
      ts.add(Tensor.gaussian(b + "self_attn.q_proj.weight", rnd, inv(hidden), heads * hd, hidden));
      ts.add(Tensor.gaussian(b + "self_attn.k_proj.weight", rnd, inv(hidden), kvHeads * hd, hidden));
      ts.add(Tensor.gaussian(b + "self_attn.v_proj.weight", rnd, inv(hidden), kvHeads * hd, hidden));
      ts.add(Tensor.gaussian(b + "self_attn.o_proj.weight", rnd, inv(heads * hd), hidden, heads * hd));
      ts.add(Tensor.norm(b + "post_attention_layernorm.weight", rnd, hidden));
      String m = b + "block_sparse_moe.";
      ts.add(Tensor.gaussian(m + "gate.weight", rnd, gateStd * inv(hidden), experts, hidden));
      for (int e = 0; e < experts; e++) {
        String x = m + "experts." + e + ".";
        ts.add(Tensor.gaussian(x + "w1.weight", rnd, inv(hidden), intermediate, hidden));
        ts.add(Tensor.gaussian(x + "w2.weight", rnd, inv(intermediate), hidden, intermediate));
        ts.add(Tensor.gaussian(x + "w3.weight", rnd, inv(hidden), intermediate, hidden));
      }
    }
    ts.add(Tensor.norm("model.norm.weight", rnd, hidden));
    ts.add(Tensor.gaussian("lm_head.weight", rnd, inv(hidden), vocabSize, hidden));
    writeSafetensors(file, ts, bf16);
  }

  private static float inv(int fanIn) {
    return (float) (1.0 / Math.sqrt(fanIn));
  }

  /** Plain safetensors: u64 header length, JSON header (8-byte aligned), little-endian data. */
  static void writeSafetensors(Path file, List<Tensor> tensors, boolean bf16) throws IOException {
    ObjectMapper om = new ObjectMapper();
    Map<String, Object> header = new LinkedHashMap<>();
    header.put("__metadata__", Map.of("format", "pt"));
    long offset = 0;
    int eb = bf16 ? 2 : 4;
    for (Tensor t : tensors) {
      long bytes = (long) t.values.length * eb;
      header.put(t.name, Map.of("dtype", bf16 ? "BF16" : "F32", "shape", t.shape,
          "data_offsets", List.of(offset, offset + bytes)));
      offset += bytes;
    }
    byte[] json = om.writeValueAsBytes(header);
    int padded = (json.length + 7) & ~7;
    ByteBuffer head = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
    head.putLong(padded).put(json);
    while (head.hasRemaining()) head.put((byte) ' ');
    head.flip();
    try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
        StandardOpenOption.TRUNCATE_EXISTING)) {
      ch.write(head);
      for (Tensor t : tensors) {
        ByteBuffer data = ByteBuffer.allocate(t.values.length * eb).order(ByteOrder.LITTLE_ENDIAN);
        for (float v : t.values) {
          if (bf16) data.putShort(toBf16(v));
          else data.putFloat(v);
        }
        data.flip();
        while (data.hasRemaining()) ch.write(data);
      }
    }
  }

  /** fp32 to bf16, round to nearest even (finite inputs only; these are random weights). */
  static short toBf16(float v) {
    int bits = Float.floatToRawIntBits(v);
    return (short) ((bits + 0x7FFF + ((bits >>> 16) & 1)) >>> 16);
  }

  private static void check(boolean ok, String message) {
    if (!ok) throw new IllegalArgumentException("tiny Mixtral: " + message);
  }

  /** One named tensor, row-major values. */
  static final class Tensor {
    final String name;
    final int[] shape;
    final float[] values;

    Tensor(String name, int[] shape, float[] values) {
      this.name = Objects.requireNonNull(name);
      this.shape = shape;
      this.values = values;
    }

    static Tensor gaussian(String name, SplittableRandom rnd, float std, int... shape) {
      int n = 1;
      for (int s : shape) n = Math.multiplyExact(n, s);
      float[] v = new float[n];
      for (int i = 0; i < n; i++) v[i] = (float) (gaussian(rnd) * std);
      return new Tensor(name, shape, v);
    }

    /** RMSNorm scales near 1, so that norms are not an identity the tests could not see through. */
    static Tensor norm(String name, SplittableRandom rnd, int n) {
      float[] v = new float[n];
      for (int i = 0; i < n; i++) v[i] = 1f + 0.1f * (float) gaussian(rnd);
      return new Tensor(name, new int[] {n}, v);
    }

    private static double gaussian(SplittableRandom rnd) {
      // Box-Muller: SplittableRandom has no nextGaussian before JDK 17's RandomGenerator default.
      double u1 = 1.0 - rnd.nextDouble(), u2 = rnd.nextDouble();
      return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    }
  }

  /**
   * A Llama/Mistral-style byte-fallback BPE vocabulary: specials, the 256 byte tokens {@code <0xNN>}, the
   * word marker, ASCII letters, digits and punctuation, and a few merges, so that jlama's
   * {@code LlamaTokenizer} encodes any text and merges common pairs.
   */
  static final class Vocabulary {
    static final int UNK = 0, BOS = 1, EOS = 2;
    private static final String WORD = "\u2581";
    private static final String[] MERGES = {"t h", "h e", "i n", "e r", "a n", WORD + " t", WORD + " a", "o n",
        "r e", WORD + "t h", "th e", WORD + " the", "e n", "a t", "o r", "e s"};
    final Map<String, Integer> vocab = new LinkedHashMap<>();
    final List<String> merges = new ArrayList<>();

    static Vocabulary build() {
      Vocabulary v = new Vocabulary();
      v.add("<unk>");
      v.add("<s>");
      v.add("</s>");
      for (int b = 0; b < 256; b++) v.add(String.format("<0x%02X>", b));
      v.add(WORD);
      for (char c = 'a'; c <= 'z'; c++) v.add(String.valueOf(c));
      for (char c = 'A'; c <= 'Z'; c++) v.add(String.valueOf(c));
      for (char c = '0'; c <= '9'; c++) v.add(String.valueOf(c));
      for (char c : ".,;:!?'\"-()".toCharArray()) v.add(String.valueOf(c));
      for (String m : MERGES) {
        v.merges.add(m);
        v.add(m.replace(" ", ""));
      }
      return v;
    }

    private void add(String token) {
      vocab.putIfAbsent(token, vocab.size());
    }

    int size() {
      return vocab.size();
    }

    void writeTokenizer(Path file) throws IOException {
      ObjectMapper om = new ObjectMapper();
      ObjectNode root = om.createObjectNode();
      root.put("version", "1.0");
      ArrayNode added = root.putArray("added_tokens");
      String[] specials = {"<unk>", "<s>", "</s>"};
      for (int i = 0; i < specials.length; i++) {
        ObjectNode a = added.addObject();
        a.put("id", i);
        a.put("content", specials[i]);
        a.put("special", true);
      }
      ObjectNode norm = root.putObject("normalizer");
      norm.put("type", "Sequence");
      ArrayNode items = norm.putArray("normalizers");
      items.addObject().put("type", "Prepend").put("prepend", WORD);
      ObjectNode replace = items.addObject().put("type", "Replace").put("content", WORD);
      replace.putObject("pattern").put("String", " ");
      root.putNull("pre_tokenizer");
      ObjectNode model = root.putObject("model");
      model.put("type", "BPE");
      model.put("unk_token", "<unk>");
      model.put("fuse_unk", true);
      model.put("byte_fallback", true);
      ObjectNode vo = model.putObject("vocab");
      vocab.forEach(vo::put);
      ArrayNode mo = model.putArray("merges");
      merges.forEach(mo::add);
      Files.write(file, om.writerWithDefaultPrettyPrinter().writeValueAsString(root).getBytes(StandardCharsets.UTF_8));
    }
  }
}
