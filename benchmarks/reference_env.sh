#!/usr/bin/env bash
# Builds the PyTorch reference environment the benchmarks compare against: l0-python on the CPU
# torch wheel, in its own virtual environment (default .venv-l0-python at the repository root).
# Usage: benchmarks/reference_env.sh [VENV_DIR]; prints the path of that environment's python.
# torch is pinned to the 2.13.0 CPU wheel and l0-python is installed with --no-deps: letting pip
# resolve l0-python's own requirement on torch can pull a multi-GB CUDA build instead.
# The best-subset peers of the regression benchmark (benchmarks/regression.py --subset) live here too:
# abess 0.4.11 and scikit-learn (LassoCV).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.venv-l0-python}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, l0, abess, sklearn" >/dev/null 2>&1; then
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "torch==2.13.0" numpy scipy
  "$venv/bin/python" -m pip install -q --no-deps l0-python
  "$venv/bin/python" -m pip install -q "abess==0.4.11" scikit-learn
fi
"$venv/bin/python" -c "import torch, l0, abess, sklearn" >/dev/null
echo "$venv/bin/python"
