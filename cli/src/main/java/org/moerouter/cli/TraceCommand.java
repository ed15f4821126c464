// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.moerouter.MoeRouterException;
import org.moerouter.RoutingAgreement;
import org.moerouter.trace.Npy;
import org.moerouter.trace.RoutingTrace;
import org.moerouter.trace.Safetensors;
import org.moerouter.trace.TraceFiles;
import org.moerouter.trace.TraceInterop;
import org.moerouter.trace.TraceMetrics;

/**
 * {@code moe-router trace} commands:
 * <pre>
 * trace inspect FILE                      metadata, shape, samples; verifies checksum (if any) and indices
 * trace convert IN OUT [options]          .npy &lt;-&gt; .safetensors trace, by extension
 *     --experts E      (from .npy) number of experts; default: max index + 1, with a note
 *     --model NAME --score FN --layer-ids 1,3,5 --sample-offsets 0,100,250
 * trace convert --from LAYOUT IN OUT.safetensors [import options]   slime, miles, verl, megatron -&gt; trace
 *     --layer-ids (slime/miles/verl: the MoE columns to keep; megatron: the columns' layer numbers)
 *     --mtp-layer-ids (megatron) --sample-offsets (megatron) --minus-one-rows reject|live|arange
 *     --no-align (slime/miles) --attention-mask M.npy (verl) --experts --model --score
 * trace convert --to LAYOUT TRACE.safetensors OUT [--num-layers N] [--masked-rows error|minus-one|arange|zeros]
 * trace diff A B                          routing agreement per layer and overall
 * </pre>
 * IN for --from: .npy, .npz, .safetensors (as Python writes them, no checksum needed) or a directory of .npy.
 * Exit codes: 0 success, 1 bad or unreadable file, 2 usage error. Errors are one line on {@code err},
 * starting {@code moe-router: error: }; {@code --help} after any command prints the usage.
 */
final class TraceCommand {
  private TraceCommand() {}

  private static final String ERROR = Main.ERROR;

  /** {@code moe-router trace ARGS}: returns the exit status (0 ok, 1 bad or unreadable file, 2 usage). */
  static int run(String[] args, PrintStream out, PrintStream err) {
    if (args.length == 0 || args[0].equals("help") || java.util.Arrays.asList(args).contains("--help")
        || java.util.Arrays.asList(args).contains("-h")) {
      usage(args.length == 0 ? err : out);
      return args.length == 0 ? 2 : 0;
    }
    try {
      switch (args[0]) {
        case "inspect":
          if (args.length != 2) return usageError(err, "inspect takes one FILE");
          return inspect(Path.of(args[1]), out);
        case "convert":
          return convert(args, out, err);
        case "diff":
          if (args.length != 3) return usageError(err, "diff takes two files A B");
          return diff(Path.of(args[1]), Path.of(args[2]), out);
        default:
          return usageError(err, "unknown command '" + args[0] + "'");
      }
    } catch (UsageException e) {
      return usageError(err, e.getMessage());
    } catch (NoSuchFileException e) {
      err.println(ERROR + e.getFile() + ": no such file");
      return 1;
    } catch (IOException e) {
      err.println(ERROR + e.getMessage());
      return 1;
    } catch (MoeRouterException e) {
      err.println(ERROR + e.getMessage());
      return 1;
    } catch (RuntimeException e) {
      err.println(ERROR + e);
      return 1;
    }
  }

  private static final class UsageException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    UsageException(String m) {
      super(m);
    }
  }

  private static void usage(PrintStream p) {
    p.println("usage: moe-router trace inspect FILE");
    p.println("       moe-router trace convert IN OUT [--experts E] [--model NAME] [--score FN] [--layer-ids 1,3,5] [--sample-offsets 0,n1,...]");
    p.println("       moe-router trace convert --from slime|miles|verl|megatron IN OUT.safetensors [--layer-ids ..] [--mtp-layer-ids ..]");
    p.println("           [--sample-offsets ..] [--minus-one-rows reject|live|arange] [--no-align] [--attention-mask M.npy] [--experts E]");
    p.println("       moe-router trace convert --to slime|miles|verl|megatron TRACE.safetensors OUT.{npz,safetensors,npy}");
    p.println("           [--num-layers N] [--masked-rows error|minus-one|arange|zeros]");
    p.println("       moe-router trace diff A B");
    p.println("files: .safetensors routing traces, .npy [tokens, layers, k] integer arrays; with --from/--to also .npz and");
    p.println("       .safetensors written by Python (no checksum needed), and for --from a directory of .npy files");
  }

  private static int usageError(PrintStream err, String message) {
    err.println(ERROR + message);
    err.println("run 'moe-router trace --help' for usage");
    return 2;
  }

  /** Trace metadata that inspect prints on lines of their own; other entries (other tools' notes) follow as "meta". */
  private static final java.util.Set<String> SHOWN_METADATA = java.util.Set.of("format", "format_version", "model", "experts",
      "top_k", "layer_ids", "mtp_layer_ids", "score_function", "checksum");

  private static boolean isNpy(Path p) {
    return p.getFileName().toString().toLowerCase(Locale.ROOT).endsWith(".npy");
  }

  private static boolean isTrace(Path p) {
    return p.getFileName().toString().toLowerCase(Locale.ROOT).endsWith(".safetensors");
  }

  private static boolean isNpz(Path p) {
    return p.getFileName().toString().toLowerCase(Locale.ROOT).endsWith(".npz");
  }

  private static int inspect(Path file, PrintStream out) throws IOException {
    if (isNpy(file)) {
      Npy.Array a = Npy.read(file);
      out.println("file:   " + file + " (.npy)");
      out.println("dtype:  " + a.dtype().descr());
      out.println("shape:  " + java.util.Arrays.toString(a.shape()));
      return 0;
    }
    if (isNpz(file)) {
      Map<String, Npy.Array> arrays = Npy.readNpz(file);
      out.println("file:   " + file + " (.npz, " + arrays.size() + " arrays)");
      for (Map.Entry<String, Npy.Array> e : arrays.entrySet())
        out.println("array " + e.getKey() + ": " + e.getValue().dtype().descr() + " " + java.util.Arrays.toString(e.getValue().shape()));
      return 0;
    }
    if (isTrace(file)) {
      Safetensors.Header h = Safetensors.readHeader(file);
      if (!TraceFiles.FORMAT.equals(h.metadata().get("format"))) {
        out.println("file:           " + file);
        out.println("format:         safetensors written by another tool (no " + TraceFiles.FORMAT + " metadata; not a trace:"
            + " import it with 'trace convert --from LAYOUT')");
        out.println("tensors:        " + h.tensors().size());
        for (Safetensors.TensorInfo t : h.tensors().values()) out.println("tensor " + t);
        for (Map.Entry<String, String> e : h.metadata().entrySet()) out.println("meta " + e.getKey() + ": " + e.getValue());
        out.println("checksum:       none (only " + TraceFiles.FORMAT + " files carry one)");
        return 0;
      }
    }
    RoutingTrace t = TraceFiles.read(file);
    out.println("file:           " + file);
    Map<String, String> meta = TraceFiles.metadata(file);
    out.println("format:         " + meta.get("format") + " v" + meta.get("format_version"));
    out.println("model:          " + t.model());
    out.println("experts:        " + t.experts());
    out.println("top_k:          " + t.topK());
    out.println("score_function: " + t.scoreFunction());
    int dec = t.layers() - t.mtpLayers();
    out.println("layers:         " + t.layers() + " " + java.util.Arrays.toString(java.util.Arrays.copyOf(t.layerIds(), dec))
        + (t.mtpLayers() > 0 ? " + MTP " + java.util.Arrays.toString(java.util.Arrays.copyOfRange(t.layerIds(), dec, t.layers())) : ""));
    out.println("indices:        " + t.indexDtype() + " [" + t.totalTokens() + ", " + t.layers() + ", " + t.topK() + "]");
    out.println("samples:        " + t.samples());
    if (t.samples() > 0) {
      long min = Long.MAX_VALUE, max = 0;
      for (int s = 0; s < t.samples(); s++) {
        min = Math.min(min, t.sampleTokens(s));
        max = Math.max(max, t.sampleTokens(s));
      }
      out.println("tokens:         " + t.totalTokens() + " (per sample: min " + min + ", max " + max + ", mean "
          + String.format(Locale.ROOT, "%.1f", (double) t.totalTokens() / t.samples()) + ")");
    }
    if (t.hasMask()) out.println("mask:           " + t.maskedTokens() + " of " + t.totalTokens() + " tokens not recorded (route live)");
    for (Map.Entry<String, String> e : meta.entrySet())
      if (!SHOWN_METADATA.contains(e.getKey())) out.println("meta " + e.getKey() + ": " + e.getValue());
    out.println("checksum:       " + (meta.containsKey("checksum") ? meta.get("checksum") + " (verified)"
        : "none (written by another tool; allowed, indices verified)"));
    return 0;
  }

  private static int convert(String[] args, PrintStream out, PrintStream err) throws IOException {
    List<String> pos = new ArrayList<>();
    int experts = 0, numLayers = 0;
    String model = null, score = null;
    int[] layerIds = null, mtpLayerIds = null;
    long[] sampleOffsets = null;
    TraceInterop.Layout from = null, to = null;
    org.moerouter.MinusOneRows minusOne = null;
    TraceInterop.MaskedRows masked = null;
    boolean noAlign = false;
    Path attentionMask = null;
    java.util.Set<String> seen = new java.util.HashSet<>();
    for (int i = 1; i < args.length; i++) {
      String a = args[i];
      if (a.equals("--no-align")) {
        noAlign = true;
      } else if (a.startsWith("--")) {
        if (i + 1 >= args.length) throw new UsageException(a + " needs a value");
        if (!seen.add(a)) throw new UsageException("option " + a + " given twice");
        String v = args[++i];
        switch (a) {
          case "--experts": experts = intInRange(a, v, 1, RoutingTrace.MAX_EXPERTS); break;
          case "--model": model = v; break;
          case "--score": score = v; break;
          case "--layer-ids": layerIds = ints(a, v); break;
          case "--mtp-layer-ids": mtpLayerIds = ints(a, v); break;
          case "--sample-offsets": sampleOffsets = parseList(a, v); break;
          case "--from": from = layout(a, v); break;
          case "--to": to = layout(a, v); break;
          case "--minus-one-rows": minusOne = minusOneRows(v); break;
          case "--masked-rows": masked = maskedRows(v); break;
          case "--num-layers": numLayers = intInRange(a, v, 1, Integer.MAX_VALUE); break;
          case "--attention-mask": attentionMask = Path.of(v); break;
          default: throw new UsageException("unknown option " + a);
        }
      } else {
        pos.add(a);
      }
    }
    if (pos.size() != 2) throw new UsageException("convert takes IN OUT");
    Path in = Path.of(pos.get(0)), outPath = Path.of(pos.get(1));
    boolean importOptions = experts != 0 || model != null || score != null || layerIds != null || sampleOffsets != null;
    if (from == null && (mtpLayerIds != null || minusOne != null || noAlign || attentionMask != null))
      throw new UsageException("--mtp-layer-ids, --minus-one-rows, --no-align and --attention-mask need --from LAYOUT");
    if (to == null && (numLayers != 0 || masked != null))
      throw new UsageException("--num-layers and --masked-rows need --to LAYOUT");
    if (from != null || to != null) {
      RoutingTrace t;
      if (from != null) {
        TraceInterop.ImportOptions o = new TraceInterop.ImportOptions().model(model).scoreFunction(score).experts(experts)
            .layerIds(layerIds).mtpLayerIds(mtpLayerIds).sampleOffsets(sampleOffsets).minusOneRows(minusOne).align(!noAlign);
        TraceInterop.Imported im = TraceInterop.read(from, in, attentionMask, o);
        for (String note : im.notes()) err.println("note: " + note);
        t = im.trace();
      } else {
        if (!isTrace(in)) throw new UsageException("--to needs a .safetensors trace as IN (or --from LAYOUT to convert between layouts)");
        if (importOptions) throw new UsageException("import options need --from LAYOUT");
        t = TraceFiles.read(in);
      }
      if (to != null) {
        String what = TraceInterop.write(to, t, outPath,
            new TraceInterop.ExportOptions().numLayers(numLayers).maskedRows(masked));
        out.println("wrote " + outPath + " (" + to.label() + "): " + what);
      } else {
        if (!isTrace(outPath)) throw new UsageException("--from writes a .safetensors trace (add --to LAYOUT for another layout)");
        TraceFiles.write(t, outPath);
        out.println("wrote " + outPath + ": " + t);
      }
      return 0;
    }
    if (isNpy(in) && isTrace(outPath)) {
      Npy.Array a = Npy.read(in);
      RoutingTrace t = TraceFiles.fromNpy(a, model, experts, layerIds, score, sampleOffsets);
      if (experts == 0) err.println("note: --experts not given; inferred E = " + t.experts() + " (max index + 1)");
      TraceFiles.write(t, outPath);
      out.println("wrote " + outPath + ": " + t);
      return 0;
    }
    if (isTrace(in) && isNpy(outPath)) {
      if (importOptions) throw new UsageException("options apply to .npy -> .safetensors only");
      RoutingTrace t = TraceFiles.read(in);
      TraceFiles.exportNpy(t, outPath);
      if (t.samples() > 1)
        err.println("note: " + t.samples() + " samples concatenated; sample offsets are not stored in .npy: "
            + (t.samples() <= 16 ? java.util.Arrays.toString(t.sampleOffsets()) : "(" + (t.samples() + 1) + " offsets)"));
      out.println("wrote " + outPath + ": int32 [" + t.totalTokens() + ", " + t.layers() + ", " + t.topK() + "]");
      return 0;
    }
    throw new UsageException("convert needs one .npy and one .safetensors file (got " + in + " -> " + outPath
        + "), or --from/--to LAYOUT");
  }

  private static TraceInterop.Layout layout(String opt, String v) {
    try {
      return TraceInterop.Layout.parse(v);
    } catch (MoeRouterException e) {
      throw new UsageException(opt + ": " + e.getMessage());
    }
  }

  private static org.moerouter.MinusOneRows minusOneRows(String v) {
    try {
      return org.moerouter.MinusOneRows.valueOf(v.toUpperCase(Locale.ROOT));
    } catch (IllegalArgumentException e) {
      throw new UsageException("--minus-one-rows must be reject, live or arange, got '" + v + "'");
    }
  }

  private static TraceInterop.MaskedRows maskedRows(String v) {
    try {
      return TraceInterop.MaskedRows.parse(v);
    } catch (MoeRouterException e) {
      throw new UsageException("--masked-rows: " + e.getMessage());
    }
  }

  private static int[] ints(String opt, String v) {
    long[] l = parseList(opt, v);
    int[] out = new int[l.length];
    for (int j = 0; j < l.length; j++) {
      if (l[j] != (int) l[j]) throw new UsageException(opt + ": " + l[j] + " is not an int");
      out[j] = (int) l[j];
    }
    return out;
  }

  /** A .npy compared with a trace takes the trace's E, layer ids and sample offsets when its shape fits. */
  private static RoutingTrace load(Path p, RoutingTrace like) throws IOException {
    if (!isNpy(p)) return TraceFiles.read(p);
    Npy.Array a = Npy.read(p);
    long[] s = a.shape();
    if (like != null && s.length == 3 && s[0] == like.totalTokens() && s[1] == like.layers() && s[2] == like.topK())
      return TraceFiles.fromNpy(a, like.model(), like.experts(), like.layerIds(), like.scoreFunction(), like.sampleOffsets());
    return TraceFiles.fromNpy(a, "", 0, null, "", null);
  }

  private static int diff(Path pa, Path pb, PrintStream out) throws IOException {
    RoutingTrace a, b;
    if (isNpy(pa) && !isNpy(pb)) {
      b = load(pb, null);
      a = load(pa, b);
    } else {
      a = load(pa, null);
      b = load(pb, a);
    }
    RoutingAgreement.Result r = TraceMetrics.agreement(a, b);
    out.println("A: " + pa + "  " + a);
    out.println("B: " + pb + "  " + b);
    out.printf(Locale.ROOT, "%8s %12s %14s %14s%n", "layer", "tokens", "rows_differ", "mean_overlap");
    for (int l = 0; l < r.layers(); l++)
      out.printf(Locale.ROOT, "%8d %12d %14.6f %14.6f%n", a.layerId(l), r.tokens(), r.differingRowFraction(l), r.meanOverlap(l));
    out.printf(Locale.ROOT, "%8s %12d %14.6f %14.6f%n", "all", r.tokens(), r.differingRowFraction(), r.meanOverlap());
    out.printf(Locale.ROOT, "tokens with any difference: %d of %d (%.6f)%n", r.differingTokens(), r.tokens(), r.differingTokenFraction());
    return 0;
  }

  /** An integer option checked as a long before it is narrowed, so 2^32 + 64 is not taken for 64. */
  private static int intInRange(String opt, String v, int min, int max) {
    long n = parseLong(opt, v);
    if (n < min || n > max) throw new UsageException(opt + " must be in [" + min + ", " + max + "], got " + v.trim());
    return (int) n;
  }

  private static long parseLong(String opt, String v) {
    try {
      return Long.parseLong(v.trim());
    } catch (NumberFormatException e) {
      throw new UsageException(opt + ": '" + v + "' is not an integer");
    }
  }

  private static long[] parseList(String opt, String v) {
    String[] parts = v.split(",");
    long[] out = new long[parts.length];
    for (int i = 0; i < parts.length; i++) out[i] = parseLong(opt, parts[i]);
    return out;
  }
}
