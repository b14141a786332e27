"""The README stays a short entry point whose links resolve, whose set-up command 2 is what
CI runs, and whose docs site configuration names every page (the site itself is built in
strict mode by scripts/docs.sh in .ci/run)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_short():
    assert len(README.splitlines()) <= 150


def test_readme_links_and_images_resolve():
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+://", t)]
    assert len(local) > 10
    missing = [t for t in local if t and not (ROOT / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def test_ci_runs_readme_command_2_verbatim():
    block = README.split("## Set-up: two commands", 1)[1].split("```bash", 1)[1].split("```")[0]
    cmd2 = [line for line in block.splitlines() if line.startswith("bash scripts/install.sh")][1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert cmd2 in ci
    assert "scripts/docs.sh" in cmd2


def test_readme_numbers_cite_their_result_files():
    """Each quoted result sits next to a link to the file it comes from."""
    for f in ("benchmarks/results/sshd_summary.json", "benchmarks/results/benchmark.json"):
        assert f"]({f})" in README


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")
             if "results" not in p.relative_to(ROOT / "docs").parts[:1]]
    missing = [p for p in pages if f": {p}" not in nav]
    assert not missing, f"pages not in mkdocs.yml's nav: {missing}"
