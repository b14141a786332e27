#!/usr/bin/env bash
# Build the documentation site (mkdocs.yml, pages in docs/) into site/ in strict mode: a
# broken link, a missing page or anchor, or an API reference that does not resolve fails.
# Run by .ci/run between the lint and the tests. Preview: ./.venv/bin/mkdocs serve
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_MKDOCS_2_WARNING=1     # Material's notice about MkDocs 2.0, not about this site
./.venv/bin/mkdocs build --strict --quiet "$@"
echo "docs: site/ built (mkdocs build --strict)"
