#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Reproducible-build check: rebuilds the library jar (CMake kernels, JNI link, jar) from a copy of this
# checkout at another path and requires the same bytes as the jar the running build produced. `mvn -B
# verify` runs it (java/pom.xml, execution check-reproducible; -Dreproducible.skip=true skips it).
#
#   scripts/check-reproducible.sh REPO_ROOT JAR [MVN [JAVA_HOME]]
#
# REPO_ROOT  the checkout whose working tree was built (tracked and untracked, non-ignored files are copied)
# JAR        the jar that build produced (java/target/moe-router.jar)
# MVN        Maven launcher (default: mvn on PATH); the rebuild is offline (-o): the first build has
#            already resolved every plugin it needs
# JAVA_HOME  JDK for the rebuild (default: the environment's); must be the first build's, since the
#            manifest records its version
#
# Environment: MOE_ROUTER_CUDA and CMAKE_CUDA_ARCHITECTURES pass through to the rebuild, so it builds what
# the first build built (not the SIMT test harness: nothing of it goes into the jar). MOE_REPRO_KEEP=1 keeps
# the temporary copy. MOE_REPRO_MVN_ARGS adds Maven arguments (for example -Dmaven.repo.local=...). Quiet when
# the jars match, as the rest of a clean build; MOE_ROUTER_VERBOSE=1 prints the steps.
# Exit status: 0 identical, 1 different (the differing jar entries are listed), 2 usage or build error.
set -euo pipefail

ROOT="$(cd "${1:?repository root}" && pwd)"
JAR="$(cd "$(dirname "${2:?jar built by this build}")" && pwd)/$(basename "$2")"
MVN="${3:-mvn}"
if [[ -n "${4:-}" ]]; then export JAVA_HOME="$4"; fi
[[ -f "$JAR" ]] || { echo "[repro] $JAR does not exist: run the package phase first" >&2; exit 2; }

say() { if [[ "${MOE_ROUTER_VERBOSE:-0}" == 1 ]]; then echo "$@"; fi; }

work="$(mktemp -d "${TMPDIR:-/tmp}/moe-router-repro.XXXXXX")"
if [[ "${MOE_REPRO_KEEP:-0}" != 1 ]]; then trap 'rm -rf "$work"' EXIT; fi
# A longer, different path: anything that embeds the checkout path shows up as a difference.
copy="$work/another/checkout/path/moe-router"
mkdir -p "$copy"

if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked (as in the working tree) plus untracked, non-ignored files: what the first build saw.
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
     while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
     tar --null -T - -cf -) | tar -C "$copy" -xf -
else
  (cd "$ROOT" && tar --exclude='./*/target' --exclude=./target --exclude=./build -cf - .) | tar -C "$copy" -xf -
fi

say "[repro] rebuilding the java module in $copy"
start=$SECONDS
# shellcheck disable=SC2086
if ! MOE_ROUTER_SIMT=OFF "$MVN" -B -q -o -f "$copy/pom.xml" -pl java -DskipTests -Dreproducible.skip=true ${MOE_REPRO_MVN_ARGS:-} \
      package >"$work/rebuild.log" 2>&1; then
  tail -n 60 "$work/rebuild.log" >&2
  echo "[repro] the rebuild failed (log above)" >&2
  exit 2
fi
other="$copy/java/target/$(basename "$JAR")"
say "[repro] rebuilt in $((SECONDS - start)) s"

a=$(sha256sum "$JAR" | cut -d' ' -f1)
b=$(sha256sum "$other" | cut -d' ' -f1)
if [[ "$a" == "$b" ]]; then
  say "[repro] identical: $(basename "$JAR") sha256 $a"
  exit 0
fi

echo "[repro] NOT reproducible: $JAR ($a) vs the rebuild at another path ($b)" >&2
jar_tool="${JAVA_HOME:+$JAVA_HOME/bin/}jar"
mkdir -p "$work/a" "$work/b"
(cd "$work/a" && "$jar_tool" xf "$JAR") && (cd "$work/b" && "$jar_tool" xf "$other")
diff -rq "$work/a" "$work/b" >&2 || true
echo "[repro] same entries but different jar bytes: entry order or times (project.build.outputTimestamp)." >&2
echo "[repro] entries only in the first build: stale outputs in target/? Try mvn clean verify." >&2
exit 1
