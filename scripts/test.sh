#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite. Real-game tests need $TEMPEST_ROMS
# (a directory holding the tempest1 set); without it they are skipped, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
# the whole suite includes the tests of MAME clients placed by Ray: install the [ray] extra too
export EXTRAS="${EXTRAS:-test,ray}"
./scripts/setup.sh
if [ -n "${TEMPEST_ROMS:-}" ]; then echo "==> real-game tests use TEMPEST_ROMS=$TEMPEST_ROMS"; fi
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -ra "$@"
