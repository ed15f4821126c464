// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** The library's own JSON reader and writer, checked against Jackson (test scope only) as the reference. */
class JsonTest {
  static final ObjectMapper JACKSON = JsonMapper.builder().enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
      .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS).enable(DeserializationFeature.USE_LONG_FOR_INTS).build();

  @Test
  void parsesWhatJacksonParsesToTheSameValues() throws Exception {
    String[] docs = {
      "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"I32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}",
      " [ 1 , -2, 0, 3.5, -0.0, 1e3, 2E-2, true, false, null, \"\\u00e9\\n\\\"\\\\\\/\\b\\f\\r\\t\" ] ",
      "{}", "[]", "\"x\"", "9223372036854775807", "-9223372036854775808", "{\"k\":{\"n\":[[[]]]}}", "\"é ü 中\"",
      "{\"s\":\"\\ud83d\\ude00\"}"
    };
    for (String d : docs) assertEquals(JACKSON.readValue(d, Object.class), Json.parse(d), d);
  }

  @Test
  void rejectsWhatStrictJsonRejectsNamingThePosition() {
    String[][] bad = {
      {"{\"a\":1,\"a\":2}", "duplicate key \"a\" at character 7"},
      {"{\"a\":1} x", "unexpected content after the JSON value at character 8"},
      {"[1,]", "unexpected character ']', expected a value at character 3"},
      {"{'a':1}", "expected a string key at character 1"},
      {"[NaN]", "unexpected character 'N', expected a value at character 1"},
      {"[01]", "leading zero in a number at character 2"},
      {"[1.]", "expected a digit after '.' at character 3"},
      {"\"a\tb\"", "control character U+0009 in a string at character 2"},
      {"\"\\x\"", "invalid escape '\\x' at character 1"},
      {"[1 2]", "expected ',' or ']' at character 3"},
      {"{\"a\" 1}", "expected ':' at character 5"},
      {"", "unexpected end of input, expected a value at character 0"},
      {"[", "unexpected end of input, expected a value at character 1"},
      {"\"abc", "unterminated string at character 4"},
      {"/* c */ {}", "unexpected character '/', expected a value at character 0"},
      {"[1e999]", "number 1e999 is out of the double range at character 6"},
      {"[".repeat(65) + "]".repeat(65), "nesting deeper than 64 at character 64"},
    };
    for (String[] b : bad) {
      Json.ParseException e = assertThrows(Json.ParseException.class, () -> Json.parse(b[0]), b[0]);
      assertEquals(b[1], e.getMessage(), b[0]);
      // Stricter than Jackson in two places: 1e999 (Jackson: Infinity) and nesting (Jackson allows 1000 levels).
      if (!b[0].contains("e999") && !b[0].startsWith("[[[[")) assertThrows(Exception.class, () -> JACKSON.readValue(b[0], Object.class), "Jackson rejects " + b[0]);
    }
  }

  @Test
  void writesCompactJsonThatJacksonReadsBack() throws Exception {
    Random r = new Random(5);
    for (int trial = 0; trial < 200; trial++) {
      Map<String, Object> m = new LinkedHashMap<>();
      StringBuilder key = new StringBuilder();
      for (int i = 0; i < 6; i++) key.append((char) (r.nextInt(0x3000)));
      m.put(key.toString(), List.of((long) r.nextInt(), r.nextLong(), "q\"\\\u0001\u001f" + key, true));
      m.put("shape", new long[] {r.nextInt(1000), 7});
      String text = Json.write(m);
      assertFalse(text.contains(" "), text);
      Object back = JACKSON.readValue(text, Object.class);
      Map<String, Object> expect = new LinkedHashMap<>(m);
      expect.put("shape", List.of(((long[]) m.get("shape"))[0], 7L));
      assertEquals(expect, back);
      assertEquals(expect, Json.parse(text));
    }
  }
}
