#!/usr/bin/env bash
# Build and run the server on its embedded defaults: SQLite + local files + self-made TLS,
# data in ./coffer-data (override with --data-dir or COFFER_DATA_DIR). Extra flags pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin coffer
exec target/release/coffer server "$@"
