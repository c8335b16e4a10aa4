#!/usr/bin/env bash
# Blob storage benchmark: Coffer vs Azurite (npm, pinned) vs nginx (Debian), all over HTTPS on
# loopback. Installs what it needs, then runs scripts/bench-storage.py, which starts the three
# servers on free ports, measures, prints Markdown and cleans up. Results: docs/benchmarks.md.
#
#   cargo build --release && scripts/bench-storage.sh [bench-storage.py options]
#
# Needs the release binary (target/release/coffer, or --bin / $COFFER_BIN); builds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

AZURITE_VERSION="${AZURITE_VERSION:-3.37.0}"
TOOLS=.bench-tools

say() { printf '==> %s\n' "$*" >&2; }

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ "${#need_apt[@]}" -gt 0 ]; then
  say "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

installed=$(node -p "require('./$TOOLS/node_modules/azurite/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$AZURITE_VERSION" ]; then
  say "npm install --prefix $TOOLS azurite@$AZURITE_VERSION"
  npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  say "python3 -m venv .venv (conformance/requirements.txt: the Azure SDKs the harness uses)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r conformance/requirements.txt
fi

exec .venv/bin/python scripts/bench-storage.py --azurite "$TOOLS/node_modules/.bin/azurite-blob" "$@"
