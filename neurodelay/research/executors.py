"""Executors: where the cells of a study (ablation runs, fine-tuned sweep cells) run.

A *cell* is one ordinary run folder of a study, brought to its end by one function call
(:data:`CELL_FUNCTIONS`): a finished cell (``result.json``) is skipped, an interrupted one
(``checkpoint.pt``) resumed, anything else started. Three ways to run the cells:

``local``, ``jobs=1``   one after the other in this process (the default).
``local``, ``jobs=N``   N cells at a time, each in its own process (``python -m
                        neurodelay.research.executors SPEC``); the machine's CPU threads are
                        split between them (``threads`` each when given, else
                        ``cpus // N``). Each cell's output goes to
                        ``STUDY/jobs/local/<cell>.log``.
``slurm``               one Slurm job per cell, submitted as one job array through
                        submitit (``partition``, ``time_min``, ``cpus``, ``gpus``,
                        ``mem_gb``, ``array_parallelism``, ``extra`` sbatch options); the
                        jobs run the same Python (this virtual environment). Logs and
                        submitit's files go to ``STUDY/jobs/slurm/``.

Preemption and time limits: Slurm signals a job (USR2, ``signal_delay_s`` before its
end); submitit then calls the job's ``checkpoint`` hook, which resubmits the same cell,
and requeues the job: the requeued job resumes the run from its last epoch checkpoint
(the run's own ``--resume``, which gives the same result as an uninterrupted run). A
cancelled (``scancel``) or failed job leaves its cell unfinished: re-issuing the study
command resumes it. Job states come from ``squeue`` (no accounting database needed;
``sacct`` is never asked).

The study folder records which job ran which cell (``STUDY/jobs.json``: per cell the
attempts with executor, job id, log file, state, error) and :func:`cell_states` reads
it back for ``neurodelay report STUDY``: every cell pending, running, finished or failed
(with the path of the failing log). One process at a time coordinates a study (the
folder's lock); the cells themselves lock their run folders.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from neurodelay import tracking
from neurodelay.errors import NeurodelayError, OptionError, StudyError
from neurodelay.fs import atomic_write
from neurodelay.runs import LOCK_FILE, RunLock

EXECUTORS = ("local", "slurm")
JOBS_DIR = "jobs"
RECORD = "jobs.json"
# kind -> "module:function"; the function is called as fn(run, threads=, log=, **args)
# and returns 'skipped' | 'resumed' | 'trained'
CELL_FUNCTIONS = {"ablation": "neurodelay.research.study:train_cell",
                  "finetune": "neurodelay.research.sweep:finetune_cell"}
# squeue states of a job that is still queued or running (or requeued after preemption)
ALIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED",
         "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED",
         "RESV_DEL_HOLD"}
SLURM_INSTALL = "pip install 'neurodelay[slurm]' (or: pip install submitit)"


@dataclass
class Cell:
    """One run of a study: ``name`` (its folder relative to the study folder, unique),
    ``kind`` (a key of :data:`CELL_FUNCTIONS`) and the function's JSON arguments."""

    name: str
    kind: str
    args: dict


@dataclass
class ExecutorOptions:
    """How the cells run (module docstring); :meth:`check` validates."""

    executor: str = "local"
    jobs: int = 1
    partition: str | None = None
    time_min: int = 240
    cpus: int = 2
    gpus: int = 0
    mem_gb: float | None = None
    array_parallelism: int = 64
    extra: dict = field(default_factory=dict)
    signal_delay_s: int = 120
    wait: bool = True
    poll_s: float = 5.0

    @classmethod
    def of(cls, value) -> "ExecutorOptions":
        """None (local, one at a time), "local" / "slurm", a dict or an instance."""
        if value is None:
            out = cls()
        elif isinstance(value, cls):
            out = value
        elif isinstance(value, str):
            out = cls(executor=value)
        elif isinstance(value, dict):
            out = cls(**value)
        else:
            raise OptionError(f"executor: expected 'local', 'slurm' or ExecutorOptions, got "
                              f"{type(value).__name__}")
        out.check()
        return out

    def check(self) -> None:
        from neurodelay.options import check_int  # lazy: keeps this module light

        if self.executor not in EXECUTORS:
            raise OptionError(f"--executor {self.executor!r}: choose local or slurm")
        check_int(self.jobs, "--jobs", "the cells run at the same time (local)", lo=1)
        check_int(self.time_min, "--slurm-time", "the time limit of each job in minutes",
                  lo=1)
        check_int(self.cpus, "--slurm-cpus", "the CPUs of each job", lo=1)
        check_int(self.gpus, "--slurm-gpus", "the GPUs of each job", lo=0)
        check_int(self.array_parallelism, "--slurm-parallel",
                  "the jobs of the array running at the same time", lo=1)
        if self.mem_gb is not None:
            from neurodelay.options import check_float  # lazy

            check_float(self.mem_gb, "--slurm-mem", "the memory of each job in GB", lo=0.0,
                        lo_open=True)
        if self.executor == "slurm" and self.jobs != 1:
            raise OptionError("--jobs is for --executor local; with --executor slurm every "
                              "cell is a job and --slurm-parallel caps how many run at once")

    @property
    def in_process(self) -> bool:
        return self.executor == "local" and self.jobs == 1


def parse_extra(items) -> dict:
    """``--slurm-extra KEY=VALUE`` items (``KEY`` alone: a flag) -> dict for sbatch."""
    out = {}
    for item in items or ():
        key, eq, value = str(item).partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise OptionError(f"--slurm-extra {item!r}: expected KEY=VALUE (an sbatch option "
                              f"without its dashes, e.g. qos=high or constraint=a100)")
        out[key] = value if eq else True
    return out


def cell_threads(opts: ExecutorOptions, threads: int | None) -> int | None:
    """torch threads of each cell: ``threads`` when given; local N jobs: the CPUs this
    process may use, split N ways; Slurm: the job's CPUs (decided in the job)."""
    if threads is not None or opts.executor == "slurm" or opts.in_process:
        return threads
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, cpus // opts.jobs)


# ----------------------------------------------------------------------------- the record

def _cell_id(name: str) -> str:
    return name.replace("/", "__")


def read_record(study) -> dict:
    path = Path(study) / RECORD
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"cells": {}}
    if not isinstance(rec, dict) or not isinstance(rec.get("cells"), dict):
        return {"cells": {}}
    return rec


def _write_record(study: Path, rec: dict) -> None:
    atomic_write(study / RECORD, json.dumps(rec, indent=2) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _done(run: Path) -> bool:
    return (run / "result.json").exists()


# ----------------------------------------------------------------------------- in a job

def _cell_function(kind: str):
    if kind not in CELL_FUNCTIONS:
        raise StudyError(f"unknown cell kind {kind!r} (known: {', '.join(CELL_FUNCTIONS)})")
    module, name = CELL_FUNCTIONS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def execute(spec: dict) -> str:
    """Run one cell (in a local worker process or a Slurm job): its function inside the
    spec's trackers; the error message goes to ``spec['error_file']`` on a failure."""
    def say(msg):
        print(msg, file=sys.stderr, flush=True)

    err = Path(spec["error_file"]) if spec.get("error_file") else None
    if err is not None and err.exists():
        err.unlink()
    threads = spec.get("threads")
    if threads is None and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        threads = int(os.environ["SLURM_CPUS_PER_TASK"])
    try:
        fn = _cell_function(spec["kind"])
        with tracking.tracked(spec.get("trackers") or ()):
            action = fn(Path(spec["run"]), threads=threads, log=say, **spec["args"])
    except Exception as exc:
        if err is not None:
            msg = str(exc) if isinstance(exc, NeurodelayError) else \
                f"{type(exc).__name__}: {exc}"
            atomic_write(err, msg + "\n")
        raise
    say(f"cell {spec['name']}: {action}")
    return action


class CellJob:
    """The callable submitit runs in a Slurm job; its ``checkpoint`` hook (called by
    submitit on preemption or before the time limit) resubmits the same cell, which
    resumes from the run's last checkpoint when the requeued job starts."""

    def __call__(self, spec: dict) -> str:
        from neurodelay.alloc import tune_allocator  # lazy

        tune_allocator()          # the job's process is ours, as the CLI's is (neurodelay.alloc)
        return execute(spec)

    def checkpoint(self, spec: dict):
        import submitit  # lazy: only inside a Slurm job

        say = f"cell {spec.get('name')}: interrupted (preempted or timed out); requeued, " \
              f"it resumes from {spec.get('run')}/checkpoint.pt"
        print(say, file=sys.stderr, flush=True)
        return submitit.helpers.DelayedSubmission(CellJob(), spec)


def _worker_main(argv) -> int:
    """``python -m neurodelay.research.executors SPEC.json``: one cell (local executor)."""
    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    from neurodelay.alloc import tune_allocator  # lazy

    tune_allocator()              # a worker process is ours, as the CLI's is (neurodelay.alloc)
    spec = json.loads(Path(argv[0]).read_text())
    try:
        execute(spec)
    except NeurodelayError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - the whole traceback goes to the cell's log
        traceback.print_exc()
        return 1
    return 0


# ----------------------------------------------------------------------------- running

def run_cells(study, cells: list[Cell], opts: ExecutorOptions, *, threads=None,
              trackers=(), log=None) -> list[dict]:
    """Bring every cell of ``study`` to its end with the executor of ``opts`` (the
    in-process case is the caller's). Returns one dict per cell: cell, run, action
    ('skipped' | 'done' | 'failed' | 'submitted'), job, log, error."""
    study = Path(study)
    say = log or (lambda m: None)
    trackers = list(tracking.check_trackers(trackers))
    with RunLock(study, "study"):
        rec = read_record(study)
        rec["cells"] = {k: v for k, v in rec["cells"].items() if isinstance(v, dict)}
        todo = [c for c in cells if not _done(study / c.name)]
        out = {c.name: {"cell": c.name, "run": str(study / c.name), "action": "skipped",
                        "job": None, "log": None, "error": None}
               for c in cells if _done(study / c.name)}
        if todo and opts.executor == "local":
            out.update(_run_local(study, todo, opts, rec, cell_threads(opts, threads),
                                  trackers, say))
        elif todo:
            out.update(_run_slurm(study, todo, opts, rec, threads, trackers, say))
    return [out[c.name] for c in cells]


def _spec(study: Path, cell: Cell, folder: Path, threads, trackers) -> dict:
    return {"name": cell.name, "kind": cell.kind, "run": str(study / cell.name),
            "args": cell.args, "threads": threads, "trackers": trackers,
            "study": str(study),
            "error_file": str(folder / f"{_cell_id(cell.name)}.error")}


def _attempt(rec: dict, cell: str, **info) -> dict:
    entry = rec["cells"].setdefault(cell, {"attempts": []})
    entry.setdefault("attempts", []).append(info)
    return info


def _outcome(study: Path, cell: str, att: dict, folder: Path) -> dict:
    run = study / cell
    finished = _done(run)
    att["state"] = "finished" if finished else "failed"
    att["ended"] = _now()
    res = {"cell": cell, "run": str(run), "action": "done" if finished else "failed",
           "job": att["job"], "log": att["log"], "error": None}
    if not finished:
        err = folder / f"{_cell_id(cell)}.error"
        msg = err.read_text(errors="replace").strip() if err.exists() else \
            att.get("error") or "the job ended without finishing the run (cancelled, " \
                                "killed or out of time)"
        att["error"] = res["error"] = msg
    return res


def _run_local(study: Path, todo: list[Cell], opts: ExecutorOptions, rec: dict, threads,
               trackers, say) -> dict:
    folder = study / JOBS_DIR / "local"
    folder.mkdir(parents=True, exist_ok=True)
    queue, running, results = list(todo), {}, {}
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    say(f"{len(todo)} cells, {opts.jobs} at a time in their own processes "
        f"({threads} threads each); logs in {folder}")
    try:
        while queue or running:
            while queue and len(running) < opts.jobs:
                cell = queue.pop(0)
                spec_path = folder / f"{_cell_id(cell.name)}.json"
                atomic_write(spec_path, json.dumps(_spec(study, cell, folder, threads,
                                                         trackers), indent=1) + "\n")
                logf = folder / f"{_cell_id(cell.name)}.log"
                with open(logf, "a") as fh:
                    fh.write(f"=== {_now()}: cell {cell.name}\n")
                    fh.flush()
                    p = subprocess.Popen([sys.executable, "-m", "neurodelay.research.executors",
                                          str(spec_path)], stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
                att = _attempt(rec, cell.name, executor="local", job=f"pid {p.pid}",
                               log=str(logf), submitted=_now(), state="running")
                running[cell.name] = (p, att)
                _write_record(study, rec)
                say(f"{cell.name}: started (pid {p.pid}, log {logf})")
            time.sleep(0.2)
            for name, (p, att) in list(running.items()):
                if p.poll() is None:
                    continue
                del running[name]
                if p.returncode != 0:
                    att["error"] = f"exit status {p.returncode}"
                results[name] = _outcome(study, name, att, folder)
                _write_record(study, rec)
                r = results[name]
                say(f"{name}: {'finished' if r['action'] == 'done' else 'FAILED'}"
                    + ("" if r["action"] == "done" else f" ({r['error']}; log {r['log']})"))
    finally:
        for name, (p, att) in running.items():       # interrupted: stop our workers
            p.terminate()
        for name, (p, att) in running.items():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            att["state"], att["error"] = "failed", "stopped: the study command was interrupted"
            att["ended"] = _now()
        if running:
            _write_record(study, rec)
    return results


# ----------------------------------------------------------------------------- Slurm

def squeue_states(job_ids) -> dict[str, str]:
    """job id -> state for the jobs Slurm still lists (``squeue``; one line per array
    task). StudyError when squeue cannot be run."""
    if not job_ids:
        return {}
    if shutil.which("squeue") is None:
        raise StudyError("squeue not found: --executor slurm needs the Slurm client "
                         "commands (sbatch, squeue, scontrol) on PATH")
    try:
        p = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T"],
                           capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise StudyError("squeue did not answer within 120 s (is slurmctld up?)") from None
    if p.returncode != 0:
        raise StudyError(f"squeue failed: {p.stderr.strip() or p.returncode} (is the "
                         f"Slurm controller reachable?)")
    wanted, out = set(job_ids), {}
    for line in p.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid in wanted:
            out[jid] = state.strip().upper()
    return out


def _alive(states: dict, job: str) -> bool:
    state = states.get(job, "").split()
    return bool(state) and state[0] in ALIVE


def _run_slurm(study: Path, todo: list[Cell], opts: ExecutorOptions, rec: dict, threads,
               trackers, say) -> dict:
    try:
        import submitit  # lazy: optional, only for --executor slurm
    except ImportError:
        raise OptionError(f"--executor slurm needs submitit, which is not installed: "
                          f"{SLURM_INSTALL}") from None
    if shutil.which("sbatch") is None:
        raise OptionError("--executor slurm: sbatch not found; run the study on a machine "
                          "with the Slurm client commands (a login node), or use "
                          "--executor local")
    folder = study / JOBS_DIR / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    # a cell whose earlier job is still queued or running is waited for, not resubmitted
    last = {c.name: ((rec["cells"].get(c.name) or {}).get("attempts") or [None])[-1]
            for c in todo}
    states = squeue_states([a["job"] for a in last.values()
                            if a and a.get("executor") == "slurm"])
    waiting = {c.name: last[c.name] for c in todo
               if last[c.name] and last[c.name].get("executor") == "slurm"
               and _alive(states, last[c.name]["job"])}
    submit = [c for c in todo if c.name not in waiting]
    for name, att in waiting.items():
        say(f"{name}: job {att['job']} is still {states[att['job']].lower()}; waiting for it")
    if submit:
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=3)
        params = dict(job_name=f"neurodelay-{study.name}", time=opts.time_min,
                      cpus_per_task=opts.cpus, array_parallelism=opts.array_parallelism,
                      signal_delay_s=opts.signal_delay_s, stderr_to_stdout=False)
        if opts.partition:
            params["partition"] = opts.partition
        if opts.gpus:
            params["gpus_per_node"] = opts.gpus
        if opts.mem_gb:
            params["mem"] = f"{int(opts.mem_gb * 1024)}MB"
        if opts.extra:
            params["additional_parameters"] = dict(opts.extra)
        ex.update_parameters(**params)
        specs = [_spec(study, c, folder, threads, trackers) for c in submit]
        try:
            with ex.batch():
                jobs = [ex.submit(CellJob(), s) for s in specs]
        except Exception as exc:  # submitit's FailedSubmissionError, sbatch errors
            raise StudyError(f"sbatch refused the study's jobs: {exc}") from None
        for c, job in zip(submit, jobs):
            waiting[c.name] = _attempt(rec, c.name, executor="slurm", job=str(job.job_id),
                                       log=str(job.paths.stderr), stdout=str(job.paths.stdout),
                                       submitted=_now(), state="submitted")
            say(f"{c.name}: Slurm job {job.job_id} (log {job.paths.stderr})")
        _write_record(study, rec)
    if not opts.wait:
        return {name: {"cell": name, "run": str(study / name), "action": "submitted",
                       "job": att["job"], "log": att["log"], "error": None}
                for name, att in waiting.items()}
    results, misses = {}, 0
    while waiting:
        time.sleep(opts.poll_s)
        try:
            states = squeue_states([a["job"] for a in waiting.values()])
            misses = 0
        except StudyError as exc:       # the controller restarting: ask again, a few times
            misses += 1
            if misses >= 10:
                raise StudyError(f"{exc}; the jobs go on: re-issue the command (or "
                                 f"`neurodelay report {study}`) once Slurm answers") from None
            continue
        for name, att in list(waiting.items()):
            if _alive(states, att["job"]):
                st = states[att["job"]].split()[0]
                if att.get("state") != st.lower():
                    att["state"] = st.lower()
                    _write_record(study, rec)
                continue
            if att["job"] in states:
                att["slurm_state"] = states[att["job"]]
                if not _done(study / name):
                    att["error"] = f"job {att['job']} ended {states[att['job']]}"
            del waiting[name]
            results[name] = _outcome(study, name, att, folder)
            _write_record(study, rec)
            r = results[name]
            say(f"{name}: {'finished' if r['action'] == 'done' else 'FAILED'}"
                + ("" if r["action"] == "done" else f" ({r['error']}; log {r['log']})"))
    return results


# ----------------------------------------------------------------------------- report

def _lock_held(run: Path) -> bool:
    """Whether a process holds the run folder's lock (it is being written)."""
    import fcntl  # lazy

    lock = run / LOCK_FILE
    if not lock.is_file() or lock.is_symlink():
        return False
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def cell_states(study, names=None) -> list[dict]:
    """Per cell of ``study``: cell, state ('pending' | 'running' | 'finished' |
    'failed'), job, log, detail. ``names``: the cells the study has (default: those
    its record knows)."""
    study = Path(study)
    rec = read_record(study)
    names = list(names) if names is not None else sorted(rec["cells"])
    last = {n: ((rec["cells"].get(n) or {}).get("attempts") or [None])[-1] for n in names}
    slurm_jobs = [a["job"] for a in last.values() if a and a.get("executor") == "slurm"
                  and a.get("state") not in ("finished", "failed")]
    try:
        states, unreachable = squeue_states(slurm_jobs), None
    except StudyError as exc:
        states, unreachable = {}, str(exc)
    out = []
    for n in names:
        run, att = study / n, last[n]
        row = {"cell": n, "state": "pending", "job": att.get("job") if att else None,
               "log": att.get("log") if att else None, "detail": ""}
        if _done(run):
            row["state"] = "finished"
        elif _lock_held(run):
            row["state"] = "running"
        elif att and att.get("executor") == "slurm" and unreachable and \
                att.get("state") not in ("finished", "failed"):
            row["detail"] = f"Slurm state unknown: {unreachable}"
        elif att and att.get("executor") == "slurm" and _alive(states, att["job"]):
            st = states[att["job"]].split()[0]
            row["state"] = "running" if st in ("RUNNING", "COMPLETING") else "pending"
            row["detail"] = f"Slurm: {st.lower()}"
        elif att and (att.get("state") == "failed" or att.get("executor") == "slurm"):
            row["state"] = "failed"
            row["detail"] = att.get("error") or "the job ended without finishing the run"
        if row["state"] == "pending" and (run / "checkpoint.pt").exists():
            row["detail"] = (row["detail"] + "; " if row["detail"] else "") + \
                "interrupted: resumes from its checkpoint when the study command is re-issued"
        out.append(row)
    return out


def states_markdown(rows: list[dict]) -> str:
    """The per-cell table of ``neurodelay report``."""
    counts = {s: sum(r["state"] == s for r in rows)
              for s in ("finished", "running", "pending", "failed")}
    lines = ["## Cells", "",
             ", ".join(f"{v} {k}" for k, v in counts.items()), "",
             "| cell | state | job | log / detail |", "|---|---|---|---|"]
    for r in rows:
        info = r["detail"]
        if r["state"] == "failed" and r["log"]:
            info = f"{r['log']}: {info}" if info else r["log"]
        lines.append(f"| {r['cell']} | {r['state']} | {r['job'] or ''} | {info} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
