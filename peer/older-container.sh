#!/bin/sh
# older-container.sh — starts the older container stand-in (older-container.ts) on the Bun that
# peer/setup.sh installed next to it. This is the "container program" a host starts: the Rust
# host's SandboxControl runs it inside bubblewrap as `older-container.sh --workspace /workspace`
# (its folder, peer/, is mounted read-only at the same path, so Bun and the script are found
# relative to this file), and the older-host peer runs it as a plain child process.
here=$(dirname "$0")
bun="$here/node_modules/bun/bin/bun.exe"
if [ ! -x "$bun" ]; then
  echo "older-container.sh: no Bun at $bun; run peer/setup.sh first" >&2
  exit 1
fi
# No transpiler cache: HOME may not exist or be writable inside a sandbox.
export BUN_RUNTIME_TRANSPILER_CACHE_PATH=0
export BUN_INSTALL_CACHE_DIR=/tmp/bun-cache
exec "$bun" "$here/older-container.ts" "$@"
