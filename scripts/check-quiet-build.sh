#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Checks that a build from a clean clone prints nothing but problems: `mvn -B -q verify` may print only
# the one-line GPU-test skip notice, the SIMT harness's one summary line per run, the GPU bundle self-test's
# one summary line, the JDK's incubator notice of the jlama example (below) and, where there is no nvcc, the
# line saying the CUDA jar is not built; `mvn -B verify` no [WARNING] other than skipped-test counts.
#
# The incubator notice: jlama needs the Vector API (--add-modules jdk.incubator.vector), and the JVM prints
# "WARNING: Using incubator modules: jdk.incubator.vector" on stderr whenever an incubator module is resolved.
# No option turns it off, and surefire copies a forked JVM's own stderr to the console whatever its output
# settings (redirectTestOutputToFile does not cover it), so it is accepted here, with exactly that text.
#
# Usage: scripts/check-quiet-build.sh [REPO]     (default: this checkout; HEAD is cloned, not the work tree)
# Environment: MOE_ROUTER_CUDA as for the build.
# Exit codes: 0 quiet, 1 unexpected output (printed), 2 the build failed.
set -uo pipefail
REPO="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
git clone -q "$REPO" "$WORK/repo" || exit 2
cd "$WORK/repo" || exit 2
mvn -B -q verify >"$WORK/q.log" 2>&1 || { cat "$WORK/q.log"; exit 2; }
unexpected_q=$(grep -vE '^\[moe-router\] (GPU tests skipped|SIMT harness): |^\[build-native\] warning: nvcc not found: |^\[gpu-bundle\] self-test: .*RESULT: OK \(log: |^WARNING: Using incubator modules: jdk\.incubator\.vector$' "$WORK/q.log")
mvn -B verify >"$WORK/full.log" 2>&1 || { cat "$WORK/full.log"; exit 2; }
unexpected_full=$(grep -E '\[WARNING\]|warning:' "$WORK/full.log" | grep -vE '\[WARNING\] Tests run: .*Skipped: [1-9]')
status=0
if [[ -n "$unexpected_q" ]]; then echo "mvn -B -q verify printed:"; printf '%s\n' "$unexpected_q" | cat -A; status=1; fi
if [[ -n "$unexpected_full" ]]; then echo "mvn -B verify warned:"; printf '%s\n' "$unexpected_full"; status=1; fi
[[ $status == 0 ]] && echo "quiet build: OK"
exit $status
