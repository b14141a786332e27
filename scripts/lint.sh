#!/usr/bin/env bash
# Lint: ruff (pyflakes + import order) and import-linter's layer contracts (pyproject.toml).
# neurodelay/exporters is a link to the top-level exporters/ folder, so the package reads
# in the repository as it is installed (exporters/ is neurodelay.exporters).
set -euo pipefail
cd "$(dirname "$0")/.."
./.venv/bin/ruff check neurodelay exporters tests benchmarks scripts docs
./.venv/bin/lint-imports
