// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * The JDK 22+ part of the library (MemorySegment overloads, FFM host calls) is compiled and tested only where
 * the build finds a JDK 22+ (java/pom.xml, jdk22-* profiles); its tests (src/test/java22) then run on that
 * JDK from the packaged jar (failsafe, execution jdk22-tests). This test, on the build JDK, reports the skip
 * with its reason, and otherwise checks that the versioned classes were compiled into the jar's layout.
 */
class Jdk22SupportTest {
  @Test
  void jdk22ClassesAreBuiltWhereAJdk22IsFound() {
    String home = System.getProperty("moerouter.jdk22.home", "");
    Assumptions.assumeFalse(home.isEmpty(), "no JDK 22+ found (Maven runs on " + Runtime.version()
        + ", /usr/lib/jvm/temurin-25-jdk-amd64 is absent and -Djdk22=... is not set): the MemorySegment overloads"
        + " are not built and src/test/java22 (MoeSegmentsTest) does not run");
    Path classes = Paths.get(System.getProperty("moerouter.classes", "target/classes"), "META-INF", "versions", "22",
        "org", "moerouter");
    for (String c : new String[] {"MoeSegments.class", "HostCalls.class"})
      assertTrue(Files.isRegularFile(classes.resolve(c)), "JDK 22+ at " + home + " but " + classes.resolve(c)
          + " was not compiled");
  }
}
