#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, builds once (release),
# then runs formatting and lint checks, the Rust unit and integration tests, and the Azure SDK
# conformance suite against real servers on port 0.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "Python virtualenv for the SDK conformance suite (pinned: conformance/requirements.txt)"
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3-venv
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r conformance/requirements.txt

step "Python virtualenv for the az CLI conformance test (pinned: conformance/requirements-azcli.txt)"
if [ ! -x .venv-azcli/bin/python ]; then
  python3 -m venv .venv-azcli
fi
.venv-azcli/bin/pip install --quiet --disable-pip-version-check -r conformance/requirements-azcli.txt

step "Chromium for the console's browser tests (Debian's package; Playwright drives it, no browser download)"
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq chromium
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --release --locked --all-targets -- -D warnings

step "cargo build --release (one build shared by every stage)"
cargo build --release --locked --all-targets

step "cargo test (unit + integration, against real servers on port 0)"
cargo test --release --locked --workspace

step "SDK conformance suite (official Azure SDKs for Python)"
COFFER_BIN="$PWD/target/release/coffer" COFFER_AZ="$PWD/.venv-azcli/bin/az" .venv/bin/python -m pytest conformance -q -p no:cacheprovider
