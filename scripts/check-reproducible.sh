#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Reproducible-build check: rebuilds the library's jars (CMake kernels, both JNI links, the classes jar and
# the linux-x86_64 and linux-x86_64-cuda native jars) from a copy of this checkout at another path and
# requires the same jars, byte for byte, as the running build produced. `mvn -B verify` runs it
# (java/pom.xml, execution check-reproducible; -Dreproducible.skip=true skips it).
#
#   scripts/check-reproducible.sh REPO_ROOT TARGET [MVN [JAVA_HOME]]
#
# REPO_ROOT  the checkout whose working tree was built (tracked and untracked, non-ignored files are copied)
# TARGET     the library module's build folder (java/target): every *.jar in it is compared
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
TARGET="$(cd "${2:?build folder of the java module}" && pwd)"
MVN="${3:-mvn}"
if [[ -n "${4:-}" ]]; then export JAVA_HOME="$4"; fi
jars_in() { (cd "$1" && find . -maxdepth 1 -name '*.jar' -printf '%f\n' | LC_ALL=C sort); }
[[ -n "$(jars_in "$TARGET")" ]] || { echo "[repro] no jar in $TARGET: run the package phase first" >&2; exit 2; }

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
other_target="$copy/java/target"
say "[repro] rebuilt in $((SECONDS - start)) s"

if [[ "$(jars_in "$TARGET")" != "$(jars_in "$other_target")" ]]; then
  echo "[repro] NOT reproducible: the builds made different jars:" >&2
  diff <(jars_in "$TARGET") <(jars_in "$other_target") >&2 || true
  echo "[repro] a jar only in the first build: stale output in target/? Try mvn clean verify." >&2
  exit 1
fi
status=0
jar_tool="${JAVA_HOME:+$JAVA_HOME/bin/}jar"
while IFS= read -r name; do
  a=$(sha256sum "$TARGET/$name" | cut -d' ' -f1)
  b=$(sha256sum "$other_target/$name" | cut -d' ' -f1)
  if [[ "$a" == "$b" ]]; then
    say "[repro] identical: $name sha256 $a"
    continue
  fi
  status=1
  echo "[repro] NOT reproducible: $TARGET/$name ($a) vs the rebuild at another path ($b)" >&2
  mkdir -p "$work/a/$name" "$work/b/$name"
  (cd "$work/a/$name" && "$jar_tool" xf "$TARGET/$name") && (cd "$work/b/$name" && "$jar_tool" xf "$other_target/$name")
  diff -rq "$work/a/$name" "$work/b/$name" >&2 || true
done < <(jars_in "$TARGET")
if [[ $status != 0 ]]; then
  echo "[repro] same entries but different jar bytes: entry order or times (project.build.outputTimestamp)." >&2
  echo "[repro] entries only in the first build: stale outputs in target/? Try mvn clean verify." >&2
fi
exit $status
