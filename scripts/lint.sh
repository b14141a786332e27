#!/usr/bin/env bash
# Lint: ruff (pyflakes + import order) and import-linter's layer contracts (pyproject.toml).
# import-linter reads the package as it is installed: exporters/ is neurodelay.exporters
# there (pyproject's package-dir), so it checks a copy laid out that way.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
./.venv/bin/ruff check neurodelay exporters tests benchmarks scripts
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r neurodelay "$tmp/neurodelay"
cp -r exporters "$tmp/neurodelay/exporters"
find "$tmp" -name __pycache__ -prune -exec rm -rf {} +
(cd "$tmp" && PYTHONPATH="$tmp" "$repo/.venv/bin/lint-imports" --no-cache "$repo/pyproject.toml")
