"""Experiment tracking: every metrics.jsonl line of a run also goes to TensorBoard or W&B.

``with tracked(["tensorboard"]):`` around a training call (``train``, ``finetune``, each
cell of ``ablate`` / ``sweep-bits``) makes the training loop's one call
:func:`record` (made right after a line is appended to ``metrics.jsonl``) write the
record to the chosen trackers too. Outside such a block :func:`record` does nothing.

``tensorboard``  event files in ``RUN/tensorboard/``: one scalar per numeric field of
                 every metrics.jsonl record (step = epoch), the run's config.json as
                 hparams (with the final result's numbers as its metrics), and the
                 figures of the run (``RUN/plots/*.png``, PNGs under ``RUN/deploy/``)
                 when the run ends. The folder always mirrors metrics.jsonl: a resumed
                 run rewrites it from the file (the lines the checkpoint had seen).
                 Read it with ``tensorboard --logdir RUN`` (or a study folder).
``wandb``        a W&B run in ``RUN/wandb/`` named after the run folder, the config as
                 its config, one ``log`` per record (step = epoch) and the result as its
                 summary. Offline (synchronise later with ``wandb sync RUN/wandb/...``)
                 unless an account is configured (``WANDB_API_KEY``, ``wandb login``) or
                 ``WANDB_MODE`` says otherwise; project ``$WANDB_PROJECT`` or
                 "neurodelay".

Both libraries are optional extras (``pip install 'neurodelay[tensorboard]'`` /
``'neurodelay[wandb]'``); :func:`check_trackers` refuses a tracker whose library is
missing with that command, before anything trains. They are imported only when a record
is written, never at import time.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from neurodelay.errors import OptionError

TRACKERS = {
    "tensorboard": ("tensorboard", "pip install 'neurodelay[tensorboard]' (or: pip install "
                                   "tensorboard)"),
    "wandb": ("wandb", "pip install 'neurodelay[wandb]' (or: pip install wandb)"),
}
FOLDERS = {"tensorboard": "tensorboard", "wandb": "wandb"}

_active: tuple[str, ...] = ()
_open: dict = {}            # resolved run folder -> list of sinks (at most one run open)


def check_trackers(names) -> tuple[str, ...]:
    """The tracker names of ``--log`` (None, "tensorboard", "tensorboard,wandb" or a
    sequence), checked: known names, libraries installed. OptionError naming the fix."""
    if names is None:
        return ()
    if isinstance(names, str):
        names = [names]
    out = []
    for item in names:
        for name in str(item).split(","):
            name = name.strip().lower()
            if not name or name == "none":
                continue
            if name not in TRACKERS:
                raise OptionError(f"--log {name!r}: unknown tracker; choose from "
                                  f"{', '.join(TRACKERS)} (or several: --log tensorboard "
                                  f"--log wandb)")
            module, how = TRACKERS[name]
            if importlib.util.find_spec(module) is None:
                raise OptionError(f"--log {name} needs the {module} package, which is not "
                                  f"installed: {how}")
            if name not in out:
                out.append(name)
    return tuple(out)


def active() -> tuple[str, ...]:
    """The trackers records go to now (empty outside :func:`tracked`)."""
    return _active


@contextmanager
def tracked(names):
    """Send the metrics records of the runs trained inside to ``names`` (see the module
    docstring); every tracker is finished on the way out, also on an error."""
    global _active, _open
    names = check_trackers(names)
    before = (_active, _open)
    _active, _open = names, {}
    try:
        yield names
    finally:
        try:
            _close_all()
        finally:
            _active, _open = before


def record(run_dir, rec: dict) -> None:
    """One metrics record of the run in ``run_dir`` (called right after the record was
    appended to its metrics.jsonl). Does nothing unless inside :func:`tracked`."""
    if not _active:
        return
    key = Path(run_dir).resolve()
    sinks = _open.get(key)
    if sinks is None:
        _close_all()                # one run at a time per process (W&B allows no more)
        history = _read_history(key)
        sinks = _open[key] = [SINKS[n](key) for n in _active]
        for s in sinks:
            s.replay(history)
    for s in sinks:
        s.log(rec)


def finish(run_dir) -> None:
    """Finish the trackers of ``run_dir`` now (its result and figures are logged)."""
    sinks = _open.pop(Path(run_dir).resolve(), None)
    for s in sinks or ():
        s.close()


def _close_all() -> None:
    for key in list(_open):
        finish(key)


# ----------------------------------------------------------------------------- helpers

def _read_history(run: Path) -> list[dict]:
    out = []
    try:
        lines = (run / "metrics.jsonl").read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def scalars(rec: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) record, flattened to ``a/b`` names (bools and
    non-numbers left out)."""
    out = {}
    for k, v in rec.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(scalars(v, name + "/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[name] = float(v)
    return out


def flat_config(cfg: dict, prefix: str = "") -> dict:
    """config.json flattened to ``section/key`` -> number | string | bool (lists and
    None as text): what TensorBoard's hparams accept."""
    out = {}
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, name + "/"))
        elif isinstance(v, (bool, int, float, str)):
            out[name] = v
        else:
            out[name] = json.dumps(v)
    return out


def figures(run: Path) -> list[Path]:
    """The run's figures: plots/*.png (``neurodelay plot``) and PNGs under deploy/."""
    found = sorted((run / "plots").glob("*.png")) if (run / "plots").is_dir() else []
    if (run / "deploy").is_dir():
        found += sorted((run / "deploy").rglob("*.png"))
    return [p for p in found if p.is_file() and not p.is_symlink()]


def _epoch(rec: dict) -> int:
    try:
        return int(rec.get("epoch", 0))
    except (TypeError, ValueError):
        return 0


# ----------------------------------------------------------------------------- sinks

class TensorBoardSink:
    """Event files in RUN/tensorboard/ (module docstring)."""

    def __init__(self, run: Path):
        from torch.utils.tensorboard import SummaryWriter  # lazy: optional, heavy

        self.run = run
        self.dir = run / FOLDERS["tensorboard"]
        if self.dir.is_symlink():
            raise OptionError(f"{self.dir}: refused, a symbolic link; neurodelay never "
                              f"writes through a link. Delete it")
        if self.dir.exists():          # mirrors metrics.jsonl: rebuilt from it
            shutil.rmtree(self.dir)
        self.writer = SummaryWriter(log_dir=str(self.dir))
        self.last = 0

    def replay(self, history: list[dict]) -> None:
        for rec in history:
            self.log(rec)

    def log(self, rec: dict) -> None:
        step = _epoch(rec)
        if step and step <= self.last:
            return
        for name, value in scalars(rec).items():
            if name != "epoch":
                self.writer.add_scalar(name, value, step)
        self.last = max(self.last, step)
        self.writer.flush()

    def close(self) -> None:
        from torch.utils.tensorboard.summary import hparams  # lazy: optional, heavy

        cfg = flat_config(_read_json(self.run / "config.json"))
        result = {f"result/{k}": v for k, v in
                  scalars(_read_json(self.run / "result.json")).items()}
        if cfg:
            exp, ssi, sei = hparams(cfg, result)
            for summary in (exp, ssi, sei):
                self.writer.file_writer.add_summary(summary)
            for name, value in result.items():
                self.writer.add_scalar(name, value, self.last)
        for fig in figures(self.run):
            self._add_figure(fig)
        self.writer.close()

    def _add_figure(self, path: Path) -> None:
        import numpy as np  # lazy
        from PIL import Image  # lazy: matplotlib's dependency

        try:
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"))
        except (OSError, ValueError):
            return                      # not a readable PNG: left out
        tag = "figures/" + str(path.relative_to(self.run).with_suffix(""))
        self.writer.add_image(tag, img, self.last, dataformats="HWC")


def _wandb_online() -> bool:
    """An account is configured (API key in the environment or netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


class WandbSink:
    """A W&B run in RUN/wandb/ (module docstring)."""

    def __init__(self, run: Path):
        import wandb  # lazy: optional, heavy

        self.run = run
        folder = run / FOLDERS["wandb"]
        if folder.is_symlink():
            raise OptionError(f"{folder}: refused, a symbolic link; neurodelay never "
                              f"writes through a link. Delete it")
        self.fresh = not folder.exists()
        folder.mkdir(exist_ok=True)
        mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_online() else "offline")
        run_id = hashlib.sha1(str(run).encode()).hexdigest()[:16]
        self.wb = wandb.init(project=os.environ.get("WANDB_PROJECT", "neurodelay"),
                             name=str(run), id=run_id, resume="allow", dir=str(run),
                             mode=mode, config=_read_json(run / "config.json"),
                             settings=wandb.Settings(silent=True, console="off"))
        self.last = 0

    def replay(self, history: list[dict]) -> None:
        if self.fresh:                  # a W&B run made now gets the whole history
            for rec in history:
                self.log(rec)
        elif history:
            self.last = _epoch(history[-1])

    def log(self, rec: dict) -> None:
        step = _epoch(rec)
        if step and step <= self.last:
            return
        self.wb.log({k: v for k, v in scalars(rec).items() if k != "epoch"}, step=step)
        self.last = max(self.last, step)

    def close(self) -> None:
        import wandb  # lazy

        for k, v in scalars(_read_json(self.run / "result.json")).items():
            self.wb.summary[f"result/{k}"] = v
        imgs = {f"figures/{p.stem}": wandb.Image(str(p)) for p in figures(self.run)}
        if imgs:
            self.wb.log(imgs, step=max(self.last, 1))
        self.wb.finish()


SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink}
