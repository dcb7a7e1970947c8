#!/usr/bin/env bash
# setup.sh — installs the older-implementation peer's npm dependencies (better-sqlite3 12 for
# older-host.mjs on Node 20, the `bun` package whose binary runs older-container.ts) into
# peer/node_modules, from package-lock.json.
#
# - Idempotent and fast when already done: a complete install leaves the marker
#   node_modules/.sessionbus-peer-ready holding the lockfile's and Node's fingerprint; a run
#   that finds a matching marker and working binaries exits at once.
# - Safe to start twice: runs serialise on a lock (peer/.setup.lock), so CI can start it in the
#   background early (`bash peer/setup.sh > setup.log 2>&1 &`) and simply run it again in the
#   foreground before the peer tests: that second run waits for the first and returns at once.
# - better-sqlite3 is built from source (node-gyp against Node's installed headers, no
#   download: the machine reaches only the package registries); that takes a few minutes on
#   2 cores.
# - xtask/tests/it/older_peer.rs checks for the marker and fails, naming this script, without it.
#
# Exit status: 0 when the peer is installed and both runtimes answer, non-zero otherwise.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

exec 9>"$here/.setup.lock"
flock 9

marker="node_modules/.sessionbus-peer-ready"
bun="node_modules/bun/bin/bun.exe"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "setup.sh: Node $(node --version) is too old: the older host runs on Node 20" >&2
  exit 1
fi
fingerprint="$(sha256sum package-lock.json | cut -d' ' -f1) node-$(node --version)"

# Both runtimes load their SQLite and answer a query.
check() {
  node -e '
    const D = require("better-sqlite3");
    const db = new D(":memory:");
    db.prepare("select sqlite_version() as v").get();
    db.close();
  ' >/dev/null 2>&1 || return 1
  [ -x "$bun" ] || return 1
  "$bun" -e 'import { Database } from "bun:sqlite"; new Database(":memory:").query("select 1").get();' \
    >/dev/null 2>&1 || return 1
}

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$fingerprint" ] && check; then
  echo "setup.sh: the peer is installed ($fingerprint)"
  exit 0
fi

rm -f "$marker"
echo "setup.sh: installing the peer's npm dependencies (better-sqlite3 builds from source: minutes)"
start=$(date +%s)
# Node's own headers, when the system has them, so node-gyp downloads nothing.
if [ -f /usr/include/node/node.h ]; then
  export npm_config_nodedir=/usr
fi
# No prebuilt binary download (there is no network but the registries): build at once.
export npm_config_build_from_source=true
npm ci --no-audit --no-fund --foreground-scripts

# Install scripts that a newer npm might not run: run them explicitly where their result is
# missing.
if [ ! -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ]; then
  npm rebuild better-sqlite3 --foreground-scripts
fi
if ! [ -x "$bun" ] || ! "$bun" --version >/dev/null 2>&1; then
  (cd node_modules/bun && node install.js)
fi

if ! check; then
  echo "setup.sh: installed, but better-sqlite3 or Bun does not work; see the output above" >&2
  exit 1
fi
printf '%s' "$fingerprint" > "$marker.tmp"
mv "$marker.tmp" "$marker"
echo "setup.sh: done in $(( $(date +%s) - start )) s (node $(node --version), bun $("$bun" --version))"
