// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A strict JSON (RFC 8259) reader and a compact writer, enough for safetensors headers and trace metadata,
 * so that the core library needs no JSON dependency.
 *
 * <p>Reading gives {@code Map<String, Object>} (insertion order), {@code List<Object>}, {@code String},
 * {@code Long} (integer literals that fit), {@code BigInteger} (larger integer literals), {@code Double}
 * (literals with a fraction or exponent), {@code Boolean} and {@code null}. Rejected, with the character
 * position: duplicate object keys (safetensors' serde parser rejects them too), trailing content, comments,
 * single quotes, NaN/Infinity, leading zeros, control characters in strings, nesting deeper than
 * {@value #MAX_DEPTH}. Writing emits no whitespace, escapes {@code " \} and control characters and writes
 * other characters as they are (the caller encodes UTF-8).
 */
final class Json {
  private Json() {}

  static final int MAX_DEPTH = 64;

  /** Malformed JSON; the message names the character position and what was expected. */
  static final class ParseException extends Exception {
    private static final long serialVersionUID = 1L;

    ParseException(String message) {
      super(message);
    }
  }

  // ------------------------------------------------------------------ reading

  static Object parse(String text) throws ParseException {
    Reader r = new Reader(text);
    r.skipSpace();
    Object v = r.value(0);
    r.skipSpace();
    if (r.p != text.length()) throw r.fail("unexpected content after the JSON value");
    return v;
  }

  private static final class Reader {
    private final String s;
    int p;

    Reader(String s) {
      this.s = s;
    }

    ParseException fail(String what) {
      return new ParseException(what + " at character " + p);
    }

    void skipSpace() {
      while (p < s.length()) {
        char c = s.charAt(p);
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
        p++;
      }
    }

    Object value(int depth) throws ParseException {
      if (p >= s.length()) throw fail("unexpected end of input, expected a value");
      char c = s.charAt(p);
      switch (c) {
        case '{':
          return object(depth + 1);
        case '[':
          return array(depth + 1);
        case '"':
          return string();
        case 't':
          return literal("true", Boolean.TRUE);
        case 'f':
          return literal("false", Boolean.FALSE);
        case 'n':
          return literal("null", null);
        default:
          if (c == '-' || (c >= '0' && c <= '9')) return number();
          throw fail("unexpected character '" + printable(c) + "', expected a value");
      }
    }

    private Object literal(String word, Object v) throws ParseException {
      if (!s.startsWith(word, p)) throw fail("unexpected token, expected '" + word + "'");
      p += word.length();
      return v;
    }

    private Map<String, Object> object(int depth) throws ParseException {
      if (depth > MAX_DEPTH) throw fail("nesting deeper than " + MAX_DEPTH);
      p++;
      Map<String, Object> out = new LinkedHashMap<>();
      skipSpace();
      if (p < s.length() && s.charAt(p) == '}') {
        p++;
        return out;
      }
      while (true) {
        skipSpace();
        if (p >= s.length() || s.charAt(p) != '"') throw fail("expected a string key");
        int keyAt = p;
        String key = string();
        skipSpace();
        expect(':');
        skipSpace();
        Object v = value(depth);
        if (out.containsKey(key)) {
          p = keyAt;
          throw fail("duplicate key \"" + key + "\"");
        }
        out.put(key, v);
        skipSpace();
        if (p >= s.length()) throw fail("unexpected end of input, expected ',' or '}'");
        char c = s.charAt(p++);
        if (c == '}') return out;
        if (c != ',') {
          p--;
          throw fail("expected ',' or '}'");
        }
      }
    }

    private List<Object> array(int depth) throws ParseException {
      if (depth > MAX_DEPTH) throw fail("nesting deeper than " + MAX_DEPTH);
      p++;
      List<Object> out = new ArrayList<>();
      skipSpace();
      if (p < s.length() && s.charAt(p) == ']') {
        p++;
        return out;
      }
      while (true) {
        skipSpace();
        out.add(value(depth));
        skipSpace();
        if (p >= s.length()) throw fail("unexpected end of input, expected ',' or ']'");
        char c = s.charAt(p++);
        if (c == ']') return out;
        if (c != ',') {
          p--;
          throw fail("expected ',' or ']'");
        }
      }
    }

    private void expect(char c) throws ParseException {
      if (p >= s.length() || s.charAt(p) != c) throw fail("expected '" + c + "'");
      p++;
    }

    private String string() throws ParseException {
      p++; // opening quote
      StringBuilder b = null;
      int start = p;
      while (true) {
        if (p >= s.length()) throw fail("unterminated string");
        char c = s.charAt(p);
        if (c == '"') {
          String v = b == null ? s.substring(start, p) : b.append(s, start, p).toString();
          p++;
          return v;
        }
        if (c < 0x20) throw fail("control character U+" + String.format("%04X", (int) c) + " in a string");
        if (c != '\\') {
          p++;
          continue;
        }
        if (b == null) b = new StringBuilder();
        b.append(s, start, p);
        if (p + 1 >= s.length()) throw fail("unterminated escape");
        char e = s.charAt(p + 1);
        p += 2;
        switch (e) {
          case '"': b.append('"'); break;
          case '\\': b.append('\\'); break;
          case '/': b.append('/'); break;
          case 'b': b.append('\b'); break;
          case 'f': b.append('\f'); break;
          case 'n': b.append('\n'); break;
          case 'r': b.append('\r'); break;
          case 't': b.append('\t'); break;
          case 'u': {
            if (p + 4 > s.length()) throw fail("truncated \\u escape");
            int v = 0;
            for (int i = 0; i < 4; i++) {
              int d = Character.digit(s.charAt(p + i), 16);
              if (d < 0) throw fail("bad hex digit in \\u escape");
              v = v * 16 + d;
            }
            p += 4;
            b.append((char) v);
            break;
          }
          default:
            p -= 2;
            throw fail("invalid escape '\\" + printable(e) + "'");
        }
        start = p;
      }
    }

    private Object number() throws ParseException {
      int start = p;
      if (s.charAt(p) == '-') p++;
      if (p >= s.length()) throw fail("truncated number");
      char c = s.charAt(p);
      if (c == '0') {
        p++;
        if (p < s.length() && Character.isDigit(s.charAt(p))) throw fail("leading zero in a number");
      } else if (c >= '1' && c <= '9') {
        while (p < s.length() && isDigit(s.charAt(p))) p++;
      } else {
        throw fail("expected a digit");
      }
      boolean integral = true;
      if (p < s.length() && s.charAt(p) == '.') {
        integral = false;
        p++;
        int d = p;
        while (p < s.length() && isDigit(s.charAt(p))) p++;
        if (p == d) throw fail("expected a digit after '.'");
      }
      if (p < s.length() && (s.charAt(p) == 'e' || s.charAt(p) == 'E')) {
        integral = false;
        p++;
        if (p < s.length() && (s.charAt(p) == '+' || s.charAt(p) == '-')) p++;
        int d = p;
        while (p < s.length() && isDigit(s.charAt(p))) p++;
        if (p == d) throw fail("expected a digit in the exponent");
      }
      String lit = s.substring(start, p);
      if (!integral) {
        double v = Double.parseDouble(lit);
        if (Double.isInfinite(v)) throw fail("number " + lit + " is out of the double range");
        return v;
      }
      if (lit.length() <= 18) return Long.parseLong(lit);
      BigInteger big = new BigInteger(lit);
      return big.bitLength() < 64 ? (Object) big.longValue() : big;
    }

    private static boolean isDigit(char c) {
      return c >= '0' && c <= '9';
    }
  }

  private static String printable(char c) {
    return c < 0x20 || c > 0x7e ? String.format("U+%04X", (int) c) : String.valueOf(c);
  }

  // ------------------------------------------------------------------ writing

  /** Compact JSON of maps (String keys), lists, long arrays, strings, numbers, booleans and null. */
  static String write(Object v) {
    StringBuilder b = new StringBuilder();
    write(b, v);
    return b.toString();
  }

  private static void write(StringBuilder b, Object v) {
    if (v == null) {
      b.append("null");
    } else if (v instanceof String) {
      quote(b, (String) v);
    } else if (v instanceof Map) {
      b.append('{');
      boolean first = true;
      for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
        if (!first) b.append(',');
        first = false;
        quote(b, (String) e.getKey());
        b.append(':');
        write(b, e.getValue());
      }
      b.append('}');
    } else if (v instanceof List) {
      b.append('[');
      boolean first = true;
      for (Object x : (List<?>) v) {
        if (!first) b.append(',');
        first = false;
        write(b, x);
      }
      b.append(']');
    } else if (v instanceof long[]) {
      long[] a = (long[]) v;
      b.append('[');
      for (int i = 0; i < a.length; i++) b.append(i == 0 ? "" : ",").append(a[i]);
      b.append(']');
    } else if (v instanceof Long || v instanceof Integer || v instanceof BigInteger || v instanceof Boolean) {
      b.append(v);
    } else if (v instanceof Double || v instanceof Float) {
      double d = ((Number) v).doubleValue();
      if (!Double.isFinite(d)) throw new IllegalArgumentException("JSON has no " + d);
      b.append(d);
    } else {
      throw new IllegalArgumentException("cannot write " + v.getClass().getName() + " as JSON");
    }
  }

  private static void quote(StringBuilder b, String s) {
    b.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"': b.append("\\\""); break;
        case '\\': b.append("\\\\"); break;
        case '\n': b.append("\\n"); break;
        case '\r': b.append("\\r"); break;
        case '\t': b.append("\\t"); break;
        case '\b': b.append("\\b"); break;
        case '\f': b.append("\\f"); break;
        default:
          if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
          else b.append(c);
      }
    }
    b.append('"');
  }
}
