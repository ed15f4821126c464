#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Writes the JVM options that depend on the JDK running jlama into a java argument file (java @FILE).
# Today one: --sun-misc-unsafe-memory-access=allow where the JDK has it (23+). jlama-core's JCTools queues
# call sun.misc.Unsafe's memory-access methods, and JDK 24+ prints "A terminally deprecated method in
# sun.misc.Unsafe has been called" on first use; the option says that this use is known and allowed.
# JDK 22 does not know the option (and does not warn): the file stays empty there.
#
#   examples/jlama/jdk-options.sh JDK FILE
#
# JDK   a JDK 22+ home (the one that runs jlama)
# FILE  the argument file to write (one option per line; empty when none applies)
# Exit status: 0, or 2 when JDK has no bin/java.
set -euo pipefail
JDK="${1:?JDK home}"
FILE="${2:?argument file}"
[[ -x "$JDK/bin/java" ]] || { echo "jdk-options.sh: no java in $JDK" >&2; exit 2; }
mkdir -p "$(dirname "$FILE")"
: >"$FILE"
if "$JDK/bin/java" --sun-misc-unsafe-memory-access=allow -version >/dev/null 2>&1; then
  echo "--sun-misc-unsafe-memory-access=allow" >>"$FILE"
fi
