#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Tries README "Adoption" exactly as written, as an engine developer would. The library's artifacts, as
# this checkout built them (java/target: the jar, the native jars; the poms), are deployed with
# maven-deploy-plugin to a repository folder. Then for each native jar a fresh client project gets the
# README's Maven dependencies (only the version replaced by the one under test) and the README's
# application sources, is built by Maven against that repository, and is run with the README's java
# command lines (the class-path line, and the module-path line for that jar) on every JDK given. Each run
# must exit 0, print a native backend (CPU or CUDA, not the Java fallback) and nothing at all on stderr
# (no warning). The client's runtime jars must be the library, its native jar and JavaCPP, nothing else.
# The Gradle blocks are checked to name the same coordinates (there is no Gradle here to run them).
# `mvn -B verify` runs it (it/pom.xml) once java/ and cli/ are packaged.
#
#   scripts/check-adoption.sh REPO_ROOT VERSION LOCAL_REPOSITORY MVN JDK...
#
# REPO_ROOT         the built checkout (README.md, the poms, java/target)
# VERSION           the version under test (README shows the release: VERSION without -SNAPSHOT)
# LOCAL_REPOSITORY  where third-party artifacts and Maven plugins come from: the build's local repository,
#                   read as a file:// mirror (no network); the Mavens started here resolve into a temporary
#                   local repository, so nothing is written there
# MVN               the Maven launcher for the deployment and the client builds
# JDK...            the JDK homes to run the clients on (empty arguments are ignored)
#
# Environment: MOE_ADOPTION_KEEP=1 keeps the temporary folder; MOE_ROUTER_VERBOSE=1 prints the steps. The
# runs use JavaCPP's default cache (~/.javacpp/cache), as an application does.
# Exit status: 0 every run clean, 1 a check failed (each failure is printed), 2 usage or setup error.
set -euo pipefail

ROOT="$(cd "${1:?repository root}" && pwd)"
VERSION="${2:?version under test}"
LOCAL="$(cd "${3:?local repository}" && pwd)"
MVN="${4:?maven launcher}"
shift 4
JDKS=()
for j in "$@"; do if [[ -n "$j" ]]; then JDKS+=("$j"); fi; done
((${#JDKS[@]})) || { echo "[adoption] no JDK given" >&2; exit 2; }

say() { if [[ "${MOE_ROUTER_VERBOSE:-0}" == 1 ]]; then echo "[adoption] $*"; fi; }
status=0
fail() { echo "[adoption] FAILED: $*" >&2; status=1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/moe-router-adoption.XXXXXX")"
if [[ "${MOE_ADOPTION_KEEP:-0}" != 1 ]]; then trap 'rm -rf "$work"' EXIT; fi
REPOSITORY="$work/repository"

# ---------------------------------------------------------------------------------- README
# The code blocks of the "## Adoption" section, one file each: NN.LANG (in order; LANG "txt" when none).
mkdir -p "$work/blocks"
awk -v dir="$work/blocks" '
  /^## / { insec = ($0 ~ /^## Adoption/) }
  insec && /^```/ {
    if (!inb) { inb = 1; n++; lang = substr($0, 4); if (lang == "") lang = "txt"; f = sprintf("%s/%02d.%s", dir, n, lang) }
    else { inb = 0; close(f) }
    next
  }
  insec && inb { print > f }
' "$ROOT/README.md"
[[ -n "$(ls "$work/blocks")" ]] || { echo "[adoption] README has no '## Adoption' section with code blocks" >&2; exit 2; }

release="${VERSION%-SNAPSHOT}"
declare -A maven gradle
for b in "$work"/blocks/*.xml "$work"/blocks/*.kotlin; do
  [[ -e "$b" ]] || continue
  classifier="$(grep -oE 'linux-x86_64(-cuda)?' "$b" | sort -u)"
  [[ -n "$classifier" && $(wc -l <<<"$classifier") == 1 ]] ||
    { echo "[adoption] README block $(basename "$b"): expected one native classifier, found: ${classifier:-none}" >&2; exit 2; }
  if [[ "$b" == *.xml ]]; then maven[$classifier]="$b"; else gradle[$classifier]="$b"; fi
done
for c in linux-x86_64 linux-x86_64-cuda; do
  [[ -n "${maven[$c]:-}" ]] || { echo "[adoption] README has no Maven block for $c" >&2; exit 2; }
  [[ -n "${gradle[$c]:-}" ]] || { echo "[adoption] README has no Gradle block for $c" >&2; exit 2; }
  # The README names the release; the snapshot under test stands in for it.
  [[ $(grep -c "<version>$release</version>" "${maven[$c]}") == 2 ]] ||
    fail "README's Maven block for $c must name version $release twice (the version under test is $VERSION)"
  grep -q "<scope>runtime</scope>" "${maven[$c]}" || fail "README's Maven block for $c: the native jar is runtime scope"
  # Gradle: the same coordinates as Maven, scope for scope.
  want="implementation(\"org.moerouter:moe-router:$release\") runtimeOnly(\"org.moerouter:moe-router:$release:$c\")"
  got="$(grep -oE '(implementation|runtimeOnly)\("[^"]*"\)' "${gradle[$c]}" | tr '\n' ' ' | sed 's/ $//')"
  [[ "$got" == "$want" ]] || fail "README's Gradle block for $c says '$got', its Maven block means '$want'"
done

runs="$(cat "$work"/blocks/*.txt 2>/dev/null | grep -E '^java ' || true)"
cp_line="$(grep -E -- ' -cp ' <<<"$runs" || true)"
[[ -n "$cp_line" && $(wc -l <<<"$cp_line") == 1 ]] ||
  { echo "[adoption] README: expected one class-path line 'java ... -cp ...'" >&2; exit 2; }

# The application: every java block whose first line is "// src/...".
mkdir -p "$work/app"
for b in "$work"/blocks/*.java; do
  [[ -e "$b" ]] || continue
  if [[ "$(head -1 "$b")" =~ ^//\ (src/[^ ]+)$ ]]; then
    mkdir -p "$(dirname "$work/app/${BASH_REMATCH[1]}")"
    cp "$b" "$work/app/${BASH_REMATCH[1]}"
  fi
done
[[ -f "$work/app/src/main/java/module-info.java" ]] ||
  { echo "[adoption] README has no '// src/main/java/module-info.java' block" >&2; exit 2; }

# ---------------------------------------------------------------------------------- Maven setup
plugin_version() {  # the root pom pins every plugin: the Mavens here use the same, already in LOCAL
  sed -n "s:.*<artifactId>$1</artifactId><version>\([^<]*\)</version>.*:\1:p" "$ROOT/pom.xml" | head -1
}
cat >"$work/settings.xml" <<EOF
<settings>
  <!-- Third-party artifacts and plugins from the build's local repository, read as a file:// mirror. -->
  <mirrors><mirror><id>local-cache</id><mirrorOf>*,!under-test</mirrorOf><url>file://$LOCAL</url></mirror></mirrors>
  <profiles><profile><id>under-test</id><repositories><repository>
    <id>under-test</id><url>file://$REPOSITORY</url>
    <releases><enabled>true</enabled></releases><snapshots><enabled>true</enabled></snapshots>
  </repository></repositories></profile></profiles>
  <activeProfiles><activeProfile>under-test</activeProfile></activeProfiles>
</settings>
EOF
mvn_here() {  # DIR LOG GOALS...: a Maven on the settings above, into a temporary local repository
  local dir="$1" log="$2"
  shift 2
  (cd "$dir" && "$MVN" -B -q -s "$work/settings.xml" -Dmaven.repo.local="$work/m2" "$@" >"$log" 2>&1)
}

# ---------------------------------------------------------------------------------- deployment
# What `mvn deploy` publishes for the parent and the library (each module's pom.xml as it is, and its jars),
# deployed the same way by deploy-file. From a Maven of its own: that one is not offline, so this works
# when the build runs with -o (Maven refuses to deploy offline, even to a folder).
target="$ROOT/java/target"
[[ -f "$target/moe-router.jar" && -f "$target/moe-router-linux-x86_64.jar" ]] ||
  { echo "[adoption] no moe-router.jar and moe-router-linux-x86_64.jar in $target: run mvn package first" >&2; exit 2; }
variants=(linux-x86_64)
files="$target/moe-router-linux-x86_64.jar"
if [[ -f "$target/moe-router-linux-x86_64-cuda.jar" ]]; then
  variants+=(linux-x86_64-cuda)
  files+=",$target/moe-router-linux-x86_64-cuda.jar"
else
  say "no moe-router-linux-x86_64-cuda.jar (built without CUDA): the CPU jar only"
fi
classifiers="$(IFS=,; echo "${variants[*]}")"
types="$(sed 's/[^,][^,]*/jar/g' <<<"$classifiers")"
# The sources and javadoc jars are published beside the jar (skipped builds, -Dmaven.javadoc.skip, lack them).
extras=""
[[ -f "$target/moe-router-sources.jar" ]] && extras+="<sources>$target/moe-router-sources.jar</sources>"
[[ -f "$target/moe-router-javadoc.jar" ]] && extras+="<javadoc>$target/moe-router-javadoc.jar</javadoc>"
deploy_plugin="$(plugin_version maven-deploy-plugin)"
[[ -n "$deploy_plugin" ]] || { echo "[adoption] no maven-deploy-plugin version in $ROOT/pom.xml" >&2; exit 2; }
mkdir -p "$work/deploy"
cat >"$work/deploy/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>example</groupId><artifactId>adoption-deploy</artifactId><version>1</version><packaging>pom</packaging>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-deploy-plugin</artifactId><version>$deploy_plugin</version>
    <configuration><repositoryId>under-test</repositoryId><url>file://$REPOSITORY</url></configuration>
    <executions>
      <execution><id>parent</id><phase>validate</phase><goals><goal>deploy-file</goal></goals><configuration>
        <file>$ROOT/pom.xml</file><pomFile>$ROOT/pom.xml</pomFile><packaging>pom</packaging>
      </configuration></execution>
      <execution><id>library</id><phase>validate</phase><goals><goal>deploy-file</goal></goals><configuration>
        <file>$target/moe-router.jar</file><pomFile>$ROOT/java/pom.xml</pomFile>
        <files>$files</files><classifiers>$classifiers</classifiers><types>$types</types>$extras
      </configuration></execution>
    </executions>
  </plugin></plugins></build>
</project>
EOF
say "deploying the parent pom and moe-router (${variants[*]}) to $REPOSITORY"
if ! mvn_here "$work/deploy" "$work/deploy/deploy.log" validate; then
  cat "$work/deploy/deploy.log" >&2
  echo "[adoption] the deployment failed (log above)" >&2
  exit 2
fi

# ---------------------------------------------------------------------------------- clients
plugins=""
for p in maven-resources-plugin maven-compiler-plugin maven-surefire-plugin maven-jar-plugin maven-dependency-plugin; do
  v="$(plugin_version "$p")"
  [[ -n "$v" ]] || { echo "[adoption] no version of $p in $ROOT/pom.xml" >&2; exit 2; }
  plugins+="      <plugin><groupId>org.apache.maven.plugins</groupId><artifactId>$p</artifactId><version>$v</version></plugin>"$'\n'
done

for c in "${variants[@]}"; do
  client="$work/client-$c"
  cp -r "$work/app" "$client"
  deps="$(sed "s:<version>$release</version>:<version>$VERSION</version>:" "${maven[$c]}")"
  cat >"$client/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>example</groupId><artifactId>adoption-client</artifactId><version>1</version>
  <properties>
    <maven.compiler.release>17</maven.compiler.release>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
  </properties>
  <dependencies>
$deps
  </dependencies>
  <build>
    <plugins>
$plugins    </plugins>
  </build>
</project>
EOF
  say "$c: mvn package dependency:copy-dependencies in $client"
  if ! mvn_here "$client" "$client/build.log" package dependency:copy-dependencies; then
    cat "$client/build.log" >&2
    fail "$c: the client project does not build against the deployed artifacts (log above)"
    continue
  fi
  # What the README's dependencies bring: the library, this native jar and JavaCPP, nothing else.
  got="$(ls "$client/target/dependency" | LC_ALL=C sort | tr '\n' ' ')"
  javacpp="$(cd "$client/target/dependency" && ls javacpp-*.jar 2>/dev/null | head -1)"
  want="$(printf '%s\n' "$javacpp" "moe-router-$VERSION-$c.jar" "moe-router-$VERSION.jar" | LC_ALL=C sort | tr '\n' ' ')"
  [[ -n "$javacpp" && "$got" == "$want" ]] || fail "$c: the runtime jars are '$got', expected '$want'"

  module="org.moerouter.${c//-/.}"
  mp_line="$(grep -E -- " --add-modules $module( |$)" <<<"$runs" || true)"
  lines=("$cp_line")
  if [[ -n "$mp_line" && $(wc -l <<<"$mp_line") == 1 ]]; then lines+=("$mp_line")
  else fail "README: expected one module-path line with --add-modules $module"; fi
  for jdk in "${JDKS[@]}"; do
    for line in "${lines[@]}"; do
      where="$c on $jdk: $line"
      say "$where"
      rc=0
      (cd "$client" && PATH="$jdk/bin:$PATH" bash -c "$line" >"$client/out" 2>"$client/err") || rc=$?
      if ((rc != 0)); then fail "$where: exit $rc"$'\n'"$(cat "$client/out" "$client/err")"; continue; fi
      if [[ -s "$client/err" ]]; then fail "$where: printed on stderr:"$'\n'"$(cat "$client/err")"; fi
      grep -qE '^(CPU|CUDA) \[' "$client/out" || fail "$where: no native backend:"$'\n'"$(cat "$client/out")"
    done
  done
done

if ((status == 0)); then say "README Adoption as written: ${variants[*]} on ${JDKS[*]}: clean"; fi
exit $status
