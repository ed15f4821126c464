// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * Spec pointers resolve inside a checkout: code, Javadoc and docs cite docs/semantics.md by section number,
 * never the shared spec outside the repository, and every cited section exists there.
 */
class SpecPointersTest {
  private static final Path ROOT = Paths.get("..").toAbsolutePath().normalize();
  private static final Path SPEC = ROOT.resolve("docs/semantics.md");
  private static final Pattern CITED = Pattern.compile("docs/semantics\\.md\\)?,? sections? (\\d+)(?:\\s*(?:-|and)\\s*(\\d+))?");
  private static final Pattern HEADING = Pattern.compile("(?m)^## (\\d+)\\. ");

  private static List<Path> sources() throws IOException {
    try (Stream<Path> s = Files.walk(ROOT)) {
      List<Path> out = new ArrayList<>();
      s.filter(Files::isRegularFile)
          .filter(p -> !ROOT.relativize(p).toString().matches("(.*/)?(target|\\.git|build|dist)/.*"))
          .filter(p -> p.toString().matches(".*\\.(java|md|h|cpp|cu|cuh|sh|xml|txt|cmake)$"))
          .forEach(out::add);
      return out;
    }
  }

  @Test
  void nothingPointsAtTheSharedSpecOutsideTheRepository() throws IOException {
    Assumptions.assumeTrue(Files.isRegularFile(SPEC), "not in a checkout: no " + SPEC);
    TreeSet<String> offenders = new TreeSet<>();
    String self = getClass().getSimpleName() + ".java";
    for (Path p : sources()) {
      if (p.getFileName().toString().equals(self)) continue;
      String text = Files.readString(p, StandardCharsets.UTF_8);
      if (text.contains("ROUTING_SPEC")) offenders.add(ROOT.relativize(p) + " cites ROUTING_SPEC");
    }
    String readme = Files.readString(ROOT.resolve("README.md"), StandardCharsets.UTF_8);
    if (readme.contains("../shared")) offenders.add("README.md sends readers to ../shared");
    assertEquals(new TreeSet<String>(), offenders, "point to docs/semantics.md (same section numbers) instead");
  }

  @Test
  void everyCitedSectionOfTheSemanticsExists() throws IOException {
    Assumptions.assumeTrue(Files.isRegularFile(SPEC), "not in a checkout: no " + SPEC);
    TreeSet<Integer> sections = new TreeSet<>();
    Matcher h = HEADING.matcher(Files.readString(SPEC, StandardCharsets.UTF_8));
    while (h.find()) sections.add(Integer.parseInt(h.group(1)));
    assertEquals(List.of(1, 2, 3, 4, 5, 6, 7), new ArrayList<>(sections), "docs/semantics.md keeps sections 1-7");
    TreeSet<String> broken = new TreeSet<>();
    int citations = 0;
    for (Path p : sources()) {
      Matcher m = CITED.matcher(Files.readString(p, StandardCharsets.UTF_8));
      while (m.find()) {
        citations++;
        int from = Integer.parseInt(m.group(1)), to = m.group(2) == null ? from : Integer.parseInt(m.group(2));
        for (int s = from; s <= to; s++)
          if (!sections.contains(s)) broken.add(ROOT.relativize(p) + ": \"" + m.group() + "\"");
      }
    }
    assertTrue(citations > 10, "the citations were not found (" + citations + "): is the pattern still right?");
    assertEquals(new TreeSet<String>(), broken, "citations of sections docs/semantics.md does not have");
  }
}
