"""Research workflow: the paper's ablation study and a report over any set of runs.

``run_ablation(out, seeds, connections=None, **train_options)`` trains the five models of
Hammouamri et al. 2023 (Fig. 5), each for every seed, into ``out/<model>/seed<k>/``:

    learned         learned delays, sigma decreasing Td/2 -> 0.5 (the method)
    constant-sigma  learned delays, sigma 0.5 from the start          (--sigma constant)
    fixed-random    fixed random integer delays, weights learned      (--delays fixed-random)
    fixed-weights   learned delays, weights frozen at initialisation  (--learn delays)
    no-delays       no delays, hidden layers widened to the same parameter count
                                                                       (--delays none)

Identical initialisation: ``train()`` calls ``torch.manual_seed(seed)`` and then builds
``DelaySNN(cfg, seed)``, which draws (per projection) the dcls init, the kaiming weights and
the uniform positions from the global torch generator, and the sparse masks from a generator
seeded with ``seed + 7919``. Loading data consumes no torch random numbers. So for one seed
``learned``, ``constant-sigma`` and ``fixed-weights`` start from the very same network,
``fixed-random`` from the same weights and masks with the positions rounded to integer
delays, and all four see the same batch order. ``no-delays`` has wider layers (other
shapes), so its initialisation cannot be the same; it shares only the seed.

The ablation is resumable: a run with ``result.json`` is not touched again, a run with a
checkpoint but no result is continued (``train_run(..., resume=True)``), anything else is
(re)started. ``out/ablation.json`` records the training options; re-running with other
options is refused (more seeds may be added at any time).

``report(dir)`` aggregates every finished run under ``dir`` (a folder holding
``result.json`` + ``config.json``), grouped by model (from its config: delays, sigma,
learn) and connectivity: mean test accuracy with a 95 % confidence interval (Student t),
parameter counts, and writes ``report.md``, ``report.csv`` and ``report.png`` into ``dir``.
"""
from __future__ import annotations

import csv
import inspect
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from neurodelay import api
from neurodelay._io import atomic_write
from neurodelay.errors import AblationError, ReportError, RunError
from neurodelay.options import SEED_MAX, check_int, check_int_list, check_threads
from neurodelay.runs import open_run, read_json
from neurodelay.train.model import DelaySNN, ModelConfig

# name -> (train options, label); in the paper's order (Fig. 5)
MODELS: dict[str, tuple[dict, str]] = {
    "learned": (dict(delays="learned", sigma="decreasing", learn="weights+delays"),
                "Learned delays"),
    "constant-sigma": (dict(delays="learned", sigma="constant", learn="weights+delays"),
                       "Learned delays, constant sigma"),
    "fixed-random": (dict(delays="fixed-random", sigma="decreasing", learn="weights"),
                     "Fixed random delays"),
    "fixed-weights": (dict(delays="learned", sigma="decreasing", learn="delays"),
                      "Learned delays, fixed weights"),
    "no-delays": (dict(delays="none", sigma="decreasing", learn="weights"),
                  "No delays (wider layers)"),
}
# options run_ablation sets itself (passing them is an error)
RESERVED_OPTIONS = ("delays", "sigma", "learn", "seed", "connections", "out", "resume",
                    "overwrite")
ABLATION_FILE = "ablation.json"
REPORT_FILES = ("report.md", "report.csv", "report.png")


# ------------------------------------------------------------------------------- helpers
_atomic_write = atomic_write


# options that do not change what is trained (left out of the ablation record)
NEUTRAL_OPTIONS = ("threads", "cache_dir")


def _option_defaults() -> dict:
    """Default values of train_run's options (from api.resolve_data / api.make_configs)."""


    out = {}
    for fn in (api.resolve_data, api.make_configs):
        for name, p in inspect.signature(fn).parameters.items():
            if p.kind == p.KEYWORD_ONLY and p.default is not inspect.Parameter.empty:
                out[name] = p.default
    return out


def _jsonable(options: dict) -> dict:
    """The options that define the runs, as plain JSON values.

    Tuples -> lists, paths -> str; None, default values and NEUTRAL_OPTIONS are dropped, so
    the CLI (which passes every default) and the API record the same ablation alike.
    """
    def conv(v):
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        return v
    defaults = _option_defaults()
    return {k: conv(v) for k, v in sorted(options.items())
            if v is not None and k not in NEUTRAL_OPTIONS
            and not (k in defaults and conv(v) == conv(defaults[k]))}


def _seed_list(seeds) -> list[int]:

    if isinstance(seeds, (int, np.integer, float)) and not isinstance(seeds, bool):
        return list(range(check_int(seeds, "--seeds", "the number of seeds per model "
                                    "(seeds 0..N-1)", lo=1)))
    out = sorted(set(check_int_list(seeds, "--seeds", "every seed", lo=0, hi=SEED_MAX,
                                    hint="Give a count N >= 1 (seeds 0..N-1) or a list of "
                                         "seeds")))
    return out


def run_state(run: Path) -> str:
    """'done' (result.json), 'partial' (checkpoint.pt, no result) or 'new'."""
    run = Path(run)
    if (run / "result.json").exists():
        return "done"
    if (run / "checkpoint.pt").exists():
        return "partial"
    return "new"


def _check_ablation_file(out: Path, record: dict) -> list[int]:
    """Refuse to mix options in one ablation folder; returns seeds recorded earlier."""
    path = out / ABLATION_FILE
    started = any(out.glob("*/seed*/config.json"))
    if not path.exists() or not started:  # nothing trained yet: options may still change
        return []

    try:
        old = read_json(path, "the ablation's options")
    except RunError as exc:
        raise AblationError(f"{exc}; remove it if the runs below it are from this ablation "
                            f"(the next call records the options again)") from None
    for key in ("connections", "options"):
        if old.get(key) != record[key]:
            raise AblationError(
                f"{out} holds an ablation with {key}={json.dumps(old.get(key))}, but this call "
                f"asks for {key}={json.dumps(record[key])}; rerun with the same options to "
                f"resume/extend it, or choose another --out")
    return [int(s) for s in old.get("seeds", [])]


# ------------------------------------------------------------------------------- ablation
def ablation_runs(out, seeds, models=None) -> list[tuple[str, int, Path]]:
    """The (model, seed, run dir) list of an ablation, in training order (seed-major)."""
    out = Path(out)
    names = list(models) if models else list(MODELS)
    for m in names:
        if m not in MODELS:
            raise AblationError(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    return [(m, s, out / m / f"seed{s}") for s in _seed_list(seeds) for m in names]


def run_ablation(out, seeds, connections: int | None = None, *, models=None,
                 progress: bool = True, log=None, **train_options) -> list[dict]:
    """Train the ablation models (``MODELS``) for every seed into ``out/<model>/seed<k>``.

    ``seeds``: a count N (seeds 0..N-1) or a list of seeds. ``connections``: K synapses
    per neuron (sparse), default fully connected. ``train_options``: any option of
    :func:`neurodelay.api.train_run` except the ones the ablation sets
    (``RESERVED_OPTIONS``), e.g. ``epochs=``, ``preset=``, ``train_file=``, ``threads=``.
    ``models``: a subset of ``MODELS`` names (default all five).

    Returns one dict per run: model, seed, run (path), action ('skipped'|'resumed'|
    'trained'), test_accuracy (None if the run did not finish).
    """


    bad = sorted(set(train_options) & set(RESERVED_OPTIONS))
    if bad:
        raise AblationError(f"run_ablation sets {', '.join(bad)} itself (per model/seed); "
                            f"remove {'it' if len(bad) == 1 else 'them'} from the options")
    if connections is not None:
        connections = check_int(connections, "--connections",
                                "the synapses per neuron of the sparse models", lo=1,
                                hint="Omit it for fully connected models")
    out = Path(out)
    todo = ablation_runs(out, seeds, models)
    train_options = dict(train_options)
    threads = check_threads(train_options.pop("threads", None))
    # every option of every model checked before anything is written
    seeds_used = sorted({s for _, s, _ in todo})
    for name in dict.fromkeys(m for m, _, _ in todo):
        for seed in (seeds_used[0], seeds_used[-1]):
            api.check_options(**{**train_options, **MODELS[name][0], "seed": seed,
                                 "connections": connections})
    record = {"connections": connections, "options": _jsonable(train_options),
              "models": list(models) if models else list(MODELS)}
    old_seeds = _check_ablation_file(out, record)
    record["seeds"] = sorted(set(old_seeds) | {s for _, s, _ in todo})
    _atomic_write(out / ABLATION_FILE, json.dumps(record, indent=2) + "\n")

    say = log or (lambda msg: tqdm.write(msg))
    results = []
    bar = tqdm(todo, desc="ablation", unit="run", disable=not progress)
    for name, seed, run in bar:
        bar.set_postfix_str(f"{name}/seed{seed}")
        state = run_state(run)
        if state == "done":
            action = "skipped"
        elif state == "partial":
            say(f"{run}: resuming from its checkpoint")
            api.train_run(run, resume=True, progress=False, threads=threads)
            action = "resumed"
        else:
            opts = {**train_options, **MODELS[name][0], "seed": seed,
                    "connections": connections}
            say(f"{run}: training ({MODELS[name][1]}, seed {seed})")
            # a folder the ablation made whose first epoch never finished holds only the
            # files of that start: replace them
            api.train_run(run, progress=False, threads=threads, log=say, overwrite=True,
                          **opts)
            action = "trained"
        res = _read_json(run / "result.json")
        results.append({"model": name, "seed": seed, "run": str(run), "action": action,
                        "test_accuracy": res.get("test_accuracy") if res else None})
    bar.close()
    return results


def initial_model(run):
    """The untrained network a run started from (rebuilt from its config and seed).

    Exact because ``train()`` seeds torch with the run's seed right before building the
    model and data loading consumes no torch random numbers.
    """


    cfg = open_run(run).config
    seed = int(cfg["train"]["seed"])
    torch.manual_seed(seed)
    model = DelaySNN(ModelConfig(**cfg["model"]), seed=seed)
    model.eval()
    return model


# ------------------------------------------------------------------------------- report
def _read_json(path: Path):
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):      # ValueError: bad JSON, bad UTF-8
        return None


def _accuracy_value(res: dict):
    v = res.get("test_accuracy")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= v <= 1.0):
        return None
    return float(v)


def model_key(cfg: dict) -> str:
    """The ablation model name of a run's config (one of MODELS, or a descriptive name)."""
    mc, tc = cfg.get("model", {}), cfg.get("train", {})
    delays = mc.get("delays", "learned")
    sigma = tc.get("sigma", "decreasing")
    learn = tc.get("learn", "weights+delays")
    if delays == "none":
        return "no-delays" if learn != "delays" else "no-delays+fixed-weights"
    if delays == "fixed-random":
        return "fixed-random" if learn != "delays" else "fixed-random+fixed-weights"
    parts = ["learned"]  # learned delays
    if sigma == "constant":
        parts = ["constant-sigma"]
    if learn == "delays":
        parts = [*([] if parts == ["learned"] else parts), "fixed-weights"]
    elif learn == "weights":
        parts.append("frozen-positions")
    return "+".join(parts)


def model_label(key: str) -> str:
    if key in MODELS:
        return MODELS[key][1]
    return key.replace("+", ", ")


def connectivity_label(connections) -> str:
    return "fully connected" if connections in (None, 0) else f"sparse K={int(connections)}"


def confidence_interval(values) -> float | None:
    """Half-width of the 95 % CI of the mean (Student t); None for fewer than 2 values."""

    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n < 2:
        return None
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


def _model_order(key: str) -> tuple:
    names = list(MODELS)
    return (names.index(key) if key in names else len(names), key)


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
    for (conn, key) in sorted(groups, key=lambda g: (g[0], _model_order(g[1]))):
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
    from matplotlib.figure import Figure

    conns = sorted({r["connections"] or 0 for r in rows})
    models = sorted({r["model"] for r in rows}, key=_model_order)
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
    _atomic_write(path, buf.getvalue())
    return Path(path)


def report(root, *, write: bool = True) -> dict:
    """Aggregate every finished run under ``root``; write report.md/.csv/.png there.

    Returns dict(rows=[...], notes=[...], markdown=str, csv=str, runs=int,
    files=[paths written]). Each row: model, label, connectivity, connections, hidden,
    n_runs, mean_pct, ci95_pct (None for one run), std_pct, min_pct, max_pct,
    parameters/weights/delays/batchnorm (a count or a range), seeds.
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
        _atomic_write(root / "report.md", md)
        _atomic_write(root / "report.csv", text)
        bar_plot(rows, root / "report.png")
        files = [root / f for f in REPORT_FILES]
    return {"rows": rows, "notes": notes, "markdown": md, "csv": text, "runs": len(recs),
            "files": files}


__all__ = ["MODELS", "AblationError", "ReportError", "run_ablation", "ablation_runs",
           "initial_model", "report", "confidence_interval", "model_key", "find_runs"]
