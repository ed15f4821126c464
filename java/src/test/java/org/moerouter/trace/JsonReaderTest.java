// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * Boundary cases of {@link Json}'s reader and writer, each at the exact edge of a rule, so that an off-by-one
 * in a limit, a position or a type choice changes a result (these closed PIT survivors in {@code Json$Reader}).
 */
class JsonReaderTest {

  private static void rejects(String text, String message) {
    Json.ParseException e = assertThrows(Json.ParseException.class, () -> Json.parse(text), text);
    assertEquals(message, e.getMessage(), text);
  }

  @Test
  void integersAreLongUpToSixtyThreeBitsAndBigIntegerBeyond() throws Exception {
    assertEquals(0L, Json.parse("0"));
    assertEquals(0L, Json.parse("-0"));
    assertEquals(7L, Json.parse("7"));
    // 18 characters: the fast path; 19 and 20: through BigInteger, still a Long while it fits.
    assertEquals(123456789012345678L, Json.parse("123456789012345678"));
    assertEquals(-12345678901234567L, Json.parse("-12345678901234567"));
    assertEquals(1234567890123456789L, Json.parse("1234567890123456789"));
    assertEquals(-123456789012345678L, Json.parse("-123456789012345678"));
    assertEquals(Long.MAX_VALUE, Json.parse("9223372036854775807"));
    assertEquals(Long.MIN_VALUE, Json.parse("-9223372036854775808"));
    assertEquals(new BigInteger("9223372036854775808"), Json.parse("9223372036854775808"));
    assertEquals(new BigInteger("-9223372036854775809"), Json.parse("-9223372036854775809"));
    assertEquals(new BigInteger("100000000000000000000"), Json.parse("100000000000000000000"));
  }

  @Test
  void fractionsAndExponentsAreDoubles() throws Exception {
    assertEquals(1.5, Json.parse("1.5"));
    assertEquals(-0.0, Json.parse("-0.0")); // Double.equals tells -0.0 from 0.0
    assertEquals(0.0, Json.parse("0.0"));
    assertEquals(100.0, Json.parse("1e2"));
    assertEquals(100.0, Json.parse("1E+2"));
    assertEquals(0.01, Json.parse("1e-2"));
    assertEquals(250.0, Json.parse("2.5e2"));
    assertEquals(0.5, Json.parse("0.5"));
    assertEquals(Double.MAX_VALUE, Json.parse("1.7976931348623157e308"));
    assertEquals(Double.MIN_VALUE, Json.parse("4.9e-324"));
    assertEquals(0.0, Json.parse("1e-400")); // underflow is a value, overflow is an error
  }

  @Test
  void malformedNumbersNameThePosition() {
    rejects("-", "truncated number at character 1");
    rejects("-a", "expected a digit at character 1");
    rejects("00", "leading zero in a number at character 1");
    rejects("-01", "leading zero in a number at character 2");
    rejects("1.", "expected a digit after '.' at character 2");
    rejects("1.e5", "expected a digit after '.' at character 2");
    rejects("1e", "expected a digit in the exponent at character 2");
    rejects("1e+", "expected a digit in the exponent at character 3");
    rejects("1E-x", "expected a digit in the exponent at character 3");
    rejects("1.8e308", "number 1.8e308 is out of the double range at character 7");
    rejects("-1.8e308", "number -1.8e308 is out of the double range at character 8");
    rejects("+1", "unexpected character '+', expected a value at character 0");
    rejects("1 x", "unexpected content after the JSON value at character 2");
    rejects("0x10", "unexpected content after the JSON value at character 1");
  }

  @Test
  void stringsDecodeEveryEscape() throws Exception {
    assertEquals("", Json.parse("\"\""));
    assertEquals(" ", Json.parse("\" \"")); // U+0020 is the first character allowed raw
    assertEquals("\u007f", Json.parse("\"\u007f\""));
    assertEquals("\n", Json.parse("\"\\n\""));
    assertEquals("x\ty\\z", Json.parse("\"x\\ty\\\\z\""));
    assertEquals("\"/\b\f\r", Json.parse("\"\\\"\\/\\b\\f\\r\""));
    assertEquals("aAb", Json.parse("\"a\\u0041b\""));
    assertEquals("\u00e9\uffff\u0000", Json.parse("\"\\u00E9\\uFFFF\\u0000\""));
    assertEquals("ab\"", Json.parse("\"ab\\\"\""));
  }

  @Test
  void malformedStringsNameThePosition() {
    rejects("\"\u001f\"", "control character U+001F in a string at character 1");
    rejects("\"ab\u0000\"", "control character U+0000 in a string at character 3");
    rejects("\"\\", "unterminated escape at character 1");
    rejects("\"ab\\\"", "unterminated string at character 5");
    rejects("\"\\u12\"", "truncated \\u escape at character 3");
    // The closing quote is read as the fourth digit; the escape may end exactly at the end of the text.
    rejects("\"\\u123\"", "bad hex digit in \\u escape at character 3");
    rejects("\"\\u123", "truncated \\u escape at character 3");
    rejects("\"\\u1234", "unterminated string at character 7");
    rejects("\"\\u12G4\"", "bad hex digit in \\u escape at character 3");
    rejects("\"ok\\q\"", "invalid escape '\\q' at character 3");
    rejects("\"\\\u0001\"", "invalid escape '\\U+0001' at character 1");
  }

  @Test
  void objectsAndArraysNestToTheLimitAndKeepKeyOrder() throws Exception {
    Object v = Json.parse(" {\t\"b\" :\n1 ,\r\"a\": [ ] , \"c\":{ }} ");
    Map<String, Object> want = new LinkedHashMap<>();
    want.put("b", 1L);
    want.put("a", List.of());
    want.put("c", Map.of());
    assertEquals(want, v);
    assertEquals(List.of("b", "a", "c"), new ArrayList<>(((Map<?, ?>) v).keySet()));
    assertEquals(List.of(true, false, List.of(), Map.of("k", List.of(1L, "x"))), Json.parse("[true,false,[],{\"k\":[1,\"x\"]}]"));
    assertEquals(java.util.Arrays.asList(1L, null), Json.parse("[1,null]"));

    Object deep = Json.parse("[".repeat(Json.MAX_DEPTH) + "]".repeat(Json.MAX_DEPTH));
    for (int i = 1; i < Json.MAX_DEPTH; i++) deep = ((List<?>) deep).get(0);
    assertEquals(List.of(), deep);
    Object deepObj = Json.parse("{\"a\":".repeat(Json.MAX_DEPTH) + "1" + "}".repeat(Json.MAX_DEPTH));
    for (int i = 0; i < Json.MAX_DEPTH; i++) deepObj = ((Map<?, ?>) deepObj).get("a");
    assertEquals(1L, deepObj);
    rejects("{\"a\":".repeat(Json.MAX_DEPTH + 1) + "1" + "}".repeat(Json.MAX_DEPTH + 1), "nesting deeper than 64 at character 320");
    rejects("[{\"a\":".repeat(32) + "[]" + "}]".repeat(32), "nesting deeper than 64 at character 192");
  }

  @Test
  void malformedContainersNameThePosition() {
    rejects("{", "expected a string key at character 1");
    rejects("{\"a\":1,}", "expected a string key at character 7");
    rejects("{\"a\"", "expected ':' at character 4");
    rejects("{\"a\":", "unexpected end of input, expected a value at character 5");
    rejects("{\"a\":1", "unexpected end of input, expected ',' or '}' at character 6");
    rejects("{\"a\":1]", "expected ',' or '}' at character 6");
    rejects("{\"b\":1, \"b\":2}", "duplicate key \"b\" at character 8");
    rejects("[1", "unexpected end of input, expected ',' or ']' at character 2");
    rejects("[1}", "expected ',' or ']' at character 2");
    rejects("tru", "unexpected token, expected 'true' at character 0");
    rejects("[nul]", "unexpected token, expected 'null' at character 1");
    rejects("[fals]", "unexpected token, expected 'false' at character 1");
    rejects("\f1", "unexpected character 'U+000C', expected a value at character 0");
    rejects("~", "unexpected character '~', expected a value at character 0");
    rejects("\u00e9", "unexpected character 'U+00E9', expected a value at character 0");
    rejects("\u007f", "unexpected character 'U+007F', expected a value at character 0");
  }

  @Test
  void writerEscapesControlCharactersAndRejectsNonFinite() {
    assertEquals("\"\\u0001\\u001f \\\"\\\\\\n\\r\\t\\b\\f\u007f\"", Json.write("\u0001\u001f \"\\\n\r\t\b\f\u007f"));
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("z", new long[] {3, -1});
    m.put("a", java.util.Arrays.asList(1, 2.5, null, true, new BigInteger("18446744073709551616")));
    m.put("f", 0.5f);
    assertEquals("{\"z\":[3,-1],\"a\":[1,2.5,null,true,18446744073709551616],\"f\":0.5}", Json.write(m));
    assertEquals("[]", Json.write(new long[0]));
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Json.write(List.of(Double.NaN)));
    assertEquals("JSON has no NaN", e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> Json.write(Float.NEGATIVE_INFINITY));
    assertEquals("JSON has no -Infinity", e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> Json.write(new Object[0]));
    assertEquals("cannot write [Ljava.lang.Object; as JSON", e.getMessage());
  }
}
