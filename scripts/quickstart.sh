#!/usr/bin/env bash
# Install notebook-deploy with the example's libraries into .venv, run example_notebooks/quickstart.ipynb
# (it trains and captures a model), serve the captured bundle on localhost and show a prediction.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[examples]"
exec .venv/bin/python examples/quickstart.py
