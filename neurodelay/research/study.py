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

The models are defined in :mod:`neurodelay.research.ablation_models`, the report in
:mod:`neurodelay.research.run_report`; their names are importable from here.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import numpy as np
import torch

from neurodelay import api, tracking
from neurodelay.errors import AblationError, ReportError, RunError  # noqa: F401
from neurodelay.fs import atomic_write
from neurodelay.options import SEED_MAX, check_int, check_int_list, check_threads
from neurodelay.progress import bar, write
from neurodelay.research import executors

# the models and the report; re-exported names: noqa F401
from neurodelay.research.ablation_models import (  # noqa: F401
    ALL_MODELS,
    MODELS,
    RECURRENT_MODELS,
    connectivity_label,
    folder_name,
    model_key,
    model_label,
    split_augment,
    with_augment,
)
from neurodelay.research.run_report import (  # noqa: F401
    REPORT_FILES,
    collect_runs,
    confidence_interval,
    csv_table,
    find_runs,
    markdown_table,
    report,
    summarise,
)
from neurodelay.runs import open_run, read_json
from neurodelay.train.augment import canonical as augment_canonical
from neurodelay.train.model import DelaySNN, ModelConfig

# options run_ablation sets itself (passing them is an error)
RESERVED_OPTIONS = ("delays", "sigma", "learn", "seed", "connections", "out", "resume",
                    "overwrite", "recurrent", "recurrent_delays", "match_feedforward")
# options that only recurrent models take (left out of the feed-forward models' runs)
RECURRENT_ONLY_OPTIONS = ("recurrent_max_delay_ms",)
ABLATION_FILE = "ablation.json"


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


def _json_value(v):
    """An option value as JSON: tuples -> lists, paths -> str."""
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return v


def _jsonable(options: dict) -> dict:
    """The options that define the runs, as plain JSON values.

    Tuples -> lists, paths -> str; None, default values and NEUTRAL_OPTIONS are dropped, so
    the CLI (which passes every default) and the API record the same ablation alike.
    """
    conv = _json_value
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
    changed = changed_options(old, record)
    if changed:
        raise AblationError(
            f"{out} holds an ablation with other options: {'; '.join(changed)} (recorded "
            f"in {path}); re-issue it with the same options to resume or extend it (the "
            f"executor, --jobs, --threads and --log may differ), or choose another --out")
    return [int(s) for s in old.get("seeds", [])]


def changed_options(old: dict, new: dict) -> list[str]:
    """What differs between two ablation records: 'epochs: 3 -> 4', 'lr: 0.002 -> (default)'
    (connections and the training options; seeds and models may be extended)."""
    out = []
    if old.get("connections") != new.get("connections"):
        out.append(f"--connections: {_shown(old.get('connections'))} -> "
                   f"{_shown(new.get('connections'))}")
    a, b = old.get("options") or {}, new.get("options") or {}
    if not isinstance(a, dict):
        a = {}
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            opt = "--" + key.replace("_", "-")
            out.append(f"{opt}: {_shown(a.get(key))} -> {_shown(b.get(key))}")
    return out


def _shown(v) -> str:
    return "(default)" if v is None else json.dumps(v)


# ------------------------------------------------------------------------------- ablation
def ablation_runs(out, seeds, models=None, augment_variants=None
                  ) -> list[tuple[str, int, Path]]:
    """The (model, seed, run dir) list of an ablation, in training order (seed-major).

    ``augment_variants``: augmentation settings (``--augment`` values, "none" for none);
    each model is then trained once per setting, as the model
    ``<model>+augment(<setting>)`` (:func:`~neurodelay.research.ablation_models.with_augment`)
    in the folder ``out/<folder_name(model)>/seed<k>``."""
    out = Path(out)
    names = list(models) if models else list(MODELS)
    for m in names:
        if split_augment(m)[0] not in ALL_MODELS:
            raise AblationError(f"unknown model {m!r}; choose from {', '.join(ALL_MODELS)}")
    if augment_variants:
        settings = list(dict.fromkeys(augment_canonical(v) for v in augment_variants))
        names = [with_augment(m, a) for m in names for a in settings]
    return [(m, s, out / folder_name(m) / f"seed{s}") for s in _seed_list(seeds)
            for m in names]


def run_ablation(out, seeds, connections: int | None = None, *, models=None,
                 augment_variants=None, progress: bool = True, log=None, executor=None,
                 trackers=None, **train_options) -> list[dict]:
    """Train the ablation models (``MODELS``) for every seed into ``out/<model>/seed<k>``.

    ``seeds``: a count N (seeds 0..N-1) or a list of seeds. ``connections``: K synapses
    per neuron (sparse), default fully connected. ``train_options``: any option of
    :func:`neurodelay.api.train_run` except the ones the ablation sets
    (``RESERVED_OPTIONS``), e.g. ``epochs=``, ``preset=``, ``train_file=``, ``threads=``.
    ``models``: a subset of ``MODELS`` names (default all five).
    ``augment_variants``: compare augmentation settings: every model once per setting
    (:func:`ablation_runs`), the same seeds; "none" is the unaugmented model.
    ``executor``: where the runs train (:class:`~neurodelay.research.executors.ExecutorOptions`,
    "local" or "slurm"; default: one after the other in this process). ``trackers``:
    ``--log`` trackers of every run ("tensorboard", "wandb"; :mod:`neurodelay.tracking`).

    Returns one dict per run: model, seed, run (path), action ('skipped'|'resumed'|
    'trained' in this process; 'skipped'|'done'|'failed'|'submitted' through another
    executor), test_accuracy (None if the run did not finish), and for another executor
    job, log and error (a failed run's message; its log file is ``log``).
    """

    bad = sorted(set(train_options) & set(RESERVED_OPTIONS))
    if bad:
        raise AblationError(f"run_ablation sets {', '.join(bad)} itself (per model/seed); "
                            f"remove {'it' if len(bad) == 1 else 'them'} from the options")
    if connections is not None:
        connections = check_int(connections, "--connections",
                                "the synapses per neuron of the sparse models", lo=1,
                                hint="Omit it for fully connected models")
    if augment_variants and train_options.get("augment"):
        raise AblationError("give the augmentation of every model (--augment) or settings "
                            "to compare (--compare-augment), not both")
    out = Path(out)
    todo = ablation_runs(out, seeds, models, augment_variants)
    train_options = dict(train_options)
    threads = check_threads(train_options.pop("threads", None))
    # where the runs train (like threads, not a setting of the ablation): any device
    runtime = {k: train_options.pop(k) for k in ("device", "tf32") if k in train_options}
    opts = executors.ExecutorOptions.of(executor)
    trackers = tracking.check_trackers(trackers)
    _record_ablation(out, todo, train_options, connections, models)

    say = log or write
    if not opts.in_process:
        cells = [executors.Cell(f"{name}/seed{seed}", "ablation",
                                {"model": name, "seed": seed,
                                 "options": _plain(train_options),
                                 "connections": connections, "runtime": runtime})
                 for name, seed, _ in todo]
        done = executors.run_cells(out, cells, opts, threads=threads, trackers=trackers,
                                   log=say)
        results = []
        for (name, seed, run), r in zip(todo, done):
            res = _read_json(run / "result.json")
            results.append({"model": name, "seed": seed, "run": str(run),
                            "action": r["action"], "job": r["job"], "log": r["log"],
                            "error": r["error"],
                            "test_accuracy": res.get("test_accuracy") if res else None})
        return results
    results = []
    pbar = bar(todo, desc="ablation", unit="run", enabled=progress)
    with tracking.tracked(trackers):
        for name, seed, run in pbar:
            pbar.set_postfix_str(f"{name}/seed{seed}")
            action = _train_one(run, name, seed, train_options, connections, threads, say,
                                runtime)
            res = _read_json(run / "result.json")
            results.append({"model": name, "seed": seed, "run": str(run), "action": action,
                            "test_accuracy": res.get("test_accuracy") if res else None})
    pbar.close()
    return results


def train_cell(run, *, model: str, seed: int, options: dict, connections, threads, log,
               runtime=None) -> str:
    """One run of an ablation in a worker process or Slurm job
    (:data:`neurodelay.research.executors.CELL_FUNCTIONS`)."""
    return _train_one(Path(run), model, int(seed), dict(options), connections, threads, log,
                      runtime)


def _plain(options: dict) -> dict:
    """The options as JSON values, nothing dropped (what a worker process receives)."""
    return {k: _json_value(v) for k, v in options.items()}


def _record_ablation(out: Path, todo: list, train_options: dict, connections,
                     models) -> None:
    """Check every option of every model (before anything is written), refuse options
    other than the ones ``out`` was started with, and write ``out/ablation.json``."""

    seeds_used = sorted({s for _, s, _ in todo})
    for name in dict.fromkeys(m for m, _, _ in todo):
        for seed in (seeds_used[0], seeds_used[-1]):
            api.check_options(**_model_options(name, train_options, seed, connections))
    record = {"connections": connections, "options": _jsonable(train_options),
              "models": list(dict.fromkeys(m for m, _, _ in todo))}
    old_seeds = _check_ablation_file(out, record)
    record["seeds"] = sorted(set(old_seeds) | {s for _, s, _ in todo})
    _atomic_write(out / ABLATION_FILE, json.dumps(record, indent=2) + "\n")


def _model_options(name: str, train_options: dict, seed: int, connections) -> dict:
    """train_run's options for model ``name``: the ablation's options, the model's own
    settings (and augmentation, for a ``+augment(...)`` variant), the seed and
    connectivity (recurrent-only options for recurrent models)."""
    base, setting = split_augment(name)
    model = dict(ALL_MODELS[base][0])
    if setting:
        model["augment"] = setting
    windowed = model.get("recurrent") and model.get("recurrent_delays") != "one-step"
    opts = {k: v for k, v in train_options.items()
            if windowed or k not in RECURRENT_ONLY_OPTIONS}
    return {**opts, **model, "seed": seed, "connections": connections}


def _train_one(run: Path, name: str, seed: int, train_options: dict, connections,
               threads, say, runtime=None) -> str:
    """Bring one run of the ablation to its end: 'skipped' (finished before), 'resumed'
    (from its checkpoint) or 'trained' (from the start)."""

    state = run_state(run)
    if state == "done":
        return "skipped"
    if state == "partial":
        say(f"{run}: resuming from its checkpoint")
        api.train_run(run, resume=True, progress=False, threads=threads, log=say,
                      **(runtime or {}))
        return "resumed"
    opts = _model_options(name, train_options, seed, connections)
    say(f"{run}: training ({model_label(name)}, seed {seed})")
    # a folder the ablation made whose first epoch never finished holds only the files of
    # that start: replace them
    api.train_run(run, progress=False, threads=threads, log=say, overwrite=True,
                  **(runtime or {}), **opts)
    return "trained"


def study_cells(out) -> list[str] | None:
    """The cells (run folders relative to ``out``) of the study in ``out``: every model x
    seed of an ablation (from ablation.json), else the cells its jobs record knows
    (``jobs.json``); None when ``out`` is not a study folder."""
    out = Path(out)
    rec = _read_json(out / ABLATION_FILE)
    if rec and isinstance(rec.get("seeds"), list):
        models = [m for m in rec.get("models") or MODELS
                  if isinstance(m, str) and split_augment(m)[0] in ALL_MODELS]
        return [f"{folder_name(m)}/seed{int(s)}" for s in rec["seeds"] for m in models]
    jobs = executors.read_record(out)["cells"]
    return sorted(jobs) if jobs else None


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


def _read_json(path: Path):
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):      # ValueError: bad JSON, bad UTF-8
        return None


__all__ = ["MODELS", "AblationError", "ReportError", "run_ablation", "ablation_runs",
           "initial_model", "report", "confidence_interval", "model_key", "find_runs"]
