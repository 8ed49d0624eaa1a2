#!/usr/bin/env bash
# The TypeScript SDK's part of `make test`: install its locked dev dependencies when
# node_modules is missing or package-lock.json changed since the last install, then run
# its whole suite (unit and end-to-end; the end-to-end tests need the local stack running
# and the binaries built, which tests/run.sh sees to).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

want="$(sha256sum package-lock.json | cut -d' ' -f1)"
marker=node_modules/.installed-lock-sha256
if [[ "$(cat "$marker" 2>/dev/null)" != "$want" ]]; then
  npm ci --no-audit --no-fund
  echo "$want" >"$marker"
fi
npm test
