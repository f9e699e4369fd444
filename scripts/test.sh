#!/usr/bin/env bash
# Install everything the tests need into .venv and run the whole test suite.
#   bash scripts/test.sh                        everything (what CI runs)
#   bash scripts/test.sh -m "not integration"   the fast subset, for iterating
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
exec .venv/bin/python -m pytest "$@"
