"""The report over any set of runs: ``report(dir)`` aggregates every finished run under
``dir`` (a folder holding ``result.json`` + ``config.json``), grouped by model (from its
config: delays, sigma, learn) and connectivity: mean test accuracy with a 95 % confidence
interval (Student t), parameter counts, and writes ``report.md``, ``report.csv`` and
``report.png`` into ``dir``. Every name here is importable from
:mod:`neurodelay.research.study` too.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from neurodelay.errors import ReportError, RunError
from neurodelay.fs import atomic_write
from neurodelay.research.ablation_models import (
    connectivity_label,
    model_key,
    model_label,
    model_order,
)
from neurodelay.runs import read_json

REPORT_FILES = ("report.md", "report.csv", "report.png")


def _accuracy_value(res: dict):
    v = res.get("test_accuracy")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= v <= 1.0):
        return None
    return float(v)


def confidence_interval(values) -> float | None:
    """Half-width of the 95 % CI of the mean (Student t); None for fewer than 2 values."""

    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n < 2:
        return None
    from scipy import stats  # lazy: seconds to import; a study's cells never need it

    return float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))


def find_runs(root) -> list[Path]:
    """Every folder under ``root`` (itself included) with result.json and config.json."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob("result.json") if (p.parent / "config.json").exists())


def collect_runs(root) -> tuple[list[dict], list[str]]:
    """One record per finished run under ``root``; plus notes on skipped folders."""

    recs, notes = [], []
    for run in find_runs(root):
        try:
            cfg = read_json(run / "config.json", "the run's settings")
            res = read_json(run / "result.json", "the run's final result")
        except RunError as exc:          # one broken run does not hide the others
            notes.append(f"skipped {run}: {exc}")
            continue
        acc = _accuracy_value(res)
        if acc is None:
            notes.append(f"skipped {run}: {run / 'result.json'} holds no test_accuracy in "
                         f"[0, 1] (got {res.get('test_accuracy')!r})")
            continue
        mc, tc = cfg.get("model", {}), cfg.get("train", {})
        if not isinstance(mc, dict) or not isinstance(tc, dict):
            notes.append(f"skipped {run}: {run / 'config.json'}: 'model' and 'train' must be "
                         f"objects")
            continue
        params = cfg.get("parameters") or res.get("parameters") or {}
        params = params if isinstance(params, dict) else {}
        data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
        hidden = mc.get("hidden") if isinstance(mc.get("hidden"), list) else None
        key = model_key(cfg)
        recs.append({
            "run": str(run), "model": key, "connections": mc.get("connections"),
            "seed": tc.get("seed"), "test_accuracy": acc,
            "parameters": params.get("total"), "weights": params.get("weights"),
            "delays": params.get("delays"), "batchnorm": params.get("batchnorm"),
            "setting": json.dumps({"hidden": mc.get("hidden"), "epochs": tc.get("epochs"),
                                   "window": mc.get("max_delay_steps"),
                                   "train": data.get("train")}),
            "hidden": hidden,
        })
    return recs, notes


def _fmt_count(values) -> int | str | None:
    """One count (int), a range 'lo-hi' when runs differ, or None when unknown."""
    vals = sorted({int(v) for v in values if v is not None})
    if not vals:
        return None
    if len(vals) == 1:
        return vals[0]
    return f"{vals[0]}-{vals[-1]}"


def _md_count(v) -> str:
    if v is None:
        return "?"
    if isinstance(v, int):
        return f"{v:,}"
    lo, hi = v.split("-")
    return f"{int(lo):,}-{int(hi):,}"


def summarise(recs: list[dict]) -> tuple[list[dict], list[str]]:
    """Group run records by (connections, model); one summary row per group."""
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        groups.setdefault((r["connections"] or 0, r["model"]), []).append(r)
    rows, notes = [], []
    for (conn, key) in sorted(groups, key=lambda g: (g[0], model_order(g[1]))):
        g = groups[(conn, key)]
        acc = np.array([r["test_accuracy"] for r in g]) * 100.0
        ci = confidence_interval(acc)
        conn_label = connectivity_label(conn or None)
        if len({r["setting"] for r in g}) > 1:
            notes.append(f"{model_label(key)} ({conn_label}): its {len(g)} runs differ in "
                         f"hidden sizes, epochs, window or data; the mean mixes them")
        seeds = sorted({r["seed"] for r in g if r["seed"] is not None})
        if len(seeds) < len(g):
            notes.append(f"{model_label(key)} ({conn_label}): {len(g)} runs but only "
                         f"{len(seeds)} distinct seeds")
        rows.append({
            "model": key, "label": model_label(key), "connectivity": conn_label,
            "connections": conn or None, "n_runs": len(g),
            "mean_pct": float(acc.mean()), "ci95_pct": ci,
            "std_pct": float(acc.std(ddof=1)) if len(acc) > 1 else None,
            "min_pct": float(acc.min()), "max_pct": float(acc.max()),
            "parameters": _fmt_count(r["parameters"] for r in g),
            "weights": _fmt_count(r["weights"] for r in g),
            "delays": _fmt_count(r["delays"] for r in g),
            "batchnorm": _fmt_count(r["batchnorm"] for r in g),
            "hidden": " / ".join(sorted({"x".join(map(str, r["hidden"] or [])) for r in g})),
            "seeds": seeds,
        })
    return rows, notes


def _pm(row) -> str:
    if row["ci95_pct"] is None:
        return "n/a (1 run)"
    return f"± {row['ci95_pct']:.2f}"


def markdown_table(rows: list[dict], notes: list[str], root: Path) -> str:
    lines = [f"# Ablation report: {root}", "",
             "Test accuracy of the discrete model (integer delays) of each run's best "
             "validation epoch; mean over runs ± half-width of the 95 % confidence interval "
             "(Student t, n-1 degrees of freedom; none for a single run).", "",
             "| model | connectivity | hidden | runs | test accuracy % | 95 % CI | min-max % "
             "| parameters (weights + delays + BN) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['connectivity']} | {r['hidden']} | {r['n_runs']} | "
                     f"{r['mean_pct']:.2f} | {_pm(r)} | {r['min_pct']:.2f}-{r['max_pct']:.2f} | "
                     f"{_md_count(r['parameters'])} ({_md_count(r['weights'])} + {_md_count(r['delays'])} + "
                     f"{_md_count(r['batchnorm'])}) |")
    if any(r["model"] == "no-delays" for r in rows) and len(rows) > 1:
        notes = [*notes, "No delays (wider layers) has other layer shapes, so it cannot start "
                         "from the same initialisation as the other models (same seed only)."]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict]) -> str:
    cols = ["model", "label", "connectivity", "connections", "hidden", "n_runs", "mean_pct",
            "ci95_pct", "std_pct", "min_pct", "max_pct", "parameters", "weights", "delays",
            "batchnorm", "seeds"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        vals = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                v = f"{v:.4f}"
            elif v is None:
                v = ""
            elif isinstance(v, list):
                v = " ".join(map(str, v))
            vals.append(v)
        w.writerow(vals)
    return buf.getvalue()


def bar_plot(rows: list[dict], path: Path, title: str = "") -> Path:
    """Grouped bars like the paper's Fig. 5: connectivity groups, one bar per model, CI bars."""
    from matplotlib.figure import Figure  # lazy: matplotlib only for figures

    conns = sorted({r["connections"] or 0 for r in rows})
    models = sorted({r["model"] for r in rows}, key=model_order)
    colors = {m: c for m, c in zip(models, ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                            "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"] * 4)}
    width = 0.8 / max(1, len(models))
    fig = Figure(figsize=(max(6.0, 2.0 + 0.7 * len(models) * len(conns)), 5.0), dpi=120)
    ax = fig.add_subplot()
    lows, highs = [], []
    for j, m in enumerate(models):
        xs, ys, es = [], [], []
        for i, c in enumerate(conns):
            r = next((r for r in rows if r["model"] == m and (r["connections"] or 0) == c), None)
            if r is None:
                continue
            xs.append(i + (j - (len(models) - 1) / 2) * width)
            ys.append(r["mean_pct"])
            es.append(r["ci95_pct"] or 0.0)
            lows.append(r["mean_pct"] - (r["ci95_pct"] or 0.0))
            highs.append(r["mean_pct"] + (r["ci95_pct"] or 0.0))
        ax.bar(xs, ys, width * 0.92, yerr=es, capsize=3, color=colors[m],
               label=model_label(m), error_kw={"elinewidth": 1})
        for x, y in zip(xs, ys):  # the mean, written inside the bar (above if too short)
            inside = y > 15
            ax.text(x - width * 0.22, y - 1 if inside else y + 1, f"{y:.1f}", ha="center",
                    va="top" if inside else "bottom", rotation=90, fontsize=7,
                    color="white" if inside else "black")
    ax.set_xticks(range(len(conns)))
    ax.set_xticklabels([connectivity_label(c or None) for c in conns])
    ax.set_ylabel("test accuracy (%)")
    lo = max(0.0, math.floor((min(lows) - 10) / 10) * 10) if lows else 0.0
    ax.set_ylim(lo, max(100.0, max(highs, default=100.0)) + 2)
    ns = sorted({r["n_runs"] for r in rows})
    ax.set_title(title or f"mean ± 95 % CI over {'/'.join(map(str, ns))} run(s) per model "
                          f"(no error bar: single run)", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2,
              frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())
    return Path(path)


def report(root, *, write: bool = True) -> dict:
    """Aggregate every finished run under ``root``; write report.md/.csv/.png there.

    Returns dict(rows=[...], notes=[...], markdown=str, csv=str, runs=int,
    files=[paths written]). Each row: model, label, connectivity, connections, hidden,
    n_runs, mean_pct, ci95_pct (None for one run), std_pct, min_pct, max_pct,
    parameters/weights/delays/batchnorm (a count or a range), seeds.


    Examples:
        A one-model, two-seed study (:func:`neurodelay.research.study.run_ablation`),
        then its report:

        >>> import tempfile
        >>> from neurodelay.data import make_synthetic
        >>> from neurodelay.research.run_report import report
        >>> from neurodelay.research.study import run_ablation
        >>> tmp = tempfile.mkdtemp()
        >>> files = make_synthetic(tmp, sizes={"train": 64, "valid": 32, "test": 32})
        >>> _ = run_ablation(f"{tmp}/abl", 2, models=["learned"], preset="tiny", hidden=[8],
        ...                  epochs=1, train_file=str(files["train"]),
        ...                  test_file=str(files["test"]), cache_dir=tmp, threads=1,
        ...                  progress=False, log=lambda m: None)
        >>> rep = report(f"{tmp}/abl")
        >>> [(row["model"], row["n_runs"]) for row in rep["rows"]]
        [('learned', 2)]
    """
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: no such folder")
    recs, notes = collect_runs(root)
    if not recs:
        raise ReportError(f"{root}: no finished runs below it (a finished run is a folder "
                          f"with result.json and config.json); train with `neurodelay train` "
                          f"or `neurodelay ablate` first"
                          + "".join(f"\n  {n}" for n in notes))
    rows, more = summarise(recs)
    notes = notes + more
    md = markdown_table(rows, notes, root)
    text = csv_table(rows)
    files = []
    if write:
        atomic_write(root / "report.md", md)
        atomic_write(root / "report.csv", text)
        bar_plot(rows, root / "report.png")
        files = [root / f for f in REPORT_FILES]
    return {"rows": rows, "notes": notes, "markdown": md, "csv": text, "runs": len(recs),
            "files": files}
