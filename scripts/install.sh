#!/usr/bin/env bash
# Create (or update) the project's virtual environment at .venv/ in the repo root.
# Idempotent: a second run only checks that the pins are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -r requirements/lock.txt
"${PIP[@]}" install --no-deps --ignore-requires-python -r requirements/nodeps.txt
"${PIP[@]}" install --no-deps --no-build-isolation -e .
.venv/bin/python -c "import neurodelay._compat as c; c.check_install()"
# build the integer-delay kernels now (cached), so the first run does not wait for them;
# without a C compiler everything works on the slower frequency-domain path
.venv/bin/python -c "from neurodelay.train import native; print('integer-delay operator:', native.status().describe())"
