"""The one training loop: what ``train`` and ``finetune`` share.

Both write a run folder the same way (:func:`writing_run`: locked, replaced only as
:func:`neurodelay.runs.new_run` allows, temporary files of interrupted writes removed,
the caller's RNG states restored) and run the same epochs (:func:`run_epochs`):

    for each epoch not yet in the checkpoint:
        task.begin_epoch(epoch)                  (sigma schedule, pruning masks, ...)
        for every shuffled batch: task.augment (--augment), forward, loss,
                                  backward, optimizer steps, task.after_step()
        valid_acc, fields = task.end_epoch(...)  (schedulers, validation)
        record -> state["metrics"]; best epoch -> task.save_best(...)
        task.checkpoint(state) -> checkpoint.pt (atomic); record -> metrics.jsonl
        one log line per epoch

A :class:`Task` says what differs: the model, its optimizers, the validation, what a
checkpoint and the best model hold, and the log line. The progress bar is drawn only on a
terminal (:mod:`neurodelay.progress`); the log lines are the record elsewhere.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neurodelay import data as D
from neurodelay import progress as P
from neurodelay import tracking
from neurodelay.fs import append_line, atomic_path, atomic_write
from neurodelay.runs import RunLock, new_run, remove_stale_temp_files
from neurodelay.train.augment import batch_generator
from neurodelay.train.model import loss_fn, scores_from_membrane


def on_cpu(obj):
    """``obj`` with every tensor (in dicts, lists and tuples) on the CPU: CPU tensors as
    they are, others copied. Checkpoints hold CPU tensors only, so a run trained on a GPU
    loads on a machine without one (and ``torch.load`` needs no ``map_location``)."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.device.type == "cpu" else obj.cpu()
    if isinstance(obj, dict):
        return type(obj)((k, on_cpu(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``: itself on the CPU; elsewhere copied from pinned memory
    without waiting (the copy overlaps queued work: no host-device sync)."""
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def save_torch(obj, path: Path) -> None:
    """``torch.save`` through an atomic write (a reader never sees half a checkpoint),
    every tensor on the CPU (:func:`on_cpu`)."""
    with atomic_path(path) as tmp:
        torch.save(on_cpu(obj), tmp)


@contextmanager
def writing_run(out: Path, purpose: str, *, resume: bool, overwrite: bool, log,
                lock: bool = True):
    """The run folder ``out``, ready to be written by one process: locked (``lock``),
    checked or replaced (:func:`neurodelay.runs.new_run`, unless ``resume``), stale
    temporary files removed; torch's and numpy's global RNG states are restored on exit."""
    torch_rng, np_rng = torch.get_rng_state(), np.random.get_state()
    try:
        if not lock:
            yield out
            return
        with RunLock(out, purpose):
            if resume:
                remove_stale_temp_files(out)
                yield out
                return
            with new_run(out, overwrite=overwrite) as removed:
                if removed:
                    log(f"--overwrite: replacing {', '.join(sorted(p.name for p in removed))} "
                        f"in {out} (the old files are removed once the new run has its "
                        f"first checkpoint)")
                remove_stale_temp_files(out)
                yield out
    finally:
        torch.set_rng_state(torch_rng)
        np.random.set_state(np_rng)


@dataclass
class EpochTotals:
    loss: float = 0.0
    correct: int = 0
    n: int = 0


class Task:
    """What one kind of training does differently (see the module docstring). The
    attributes below must be set; the methods have the defaults plain training needs."""

    model: torch.nn.Module        # what is trained (its parameters, after_step, train())
    net: torch.nn.Module          # what computes the forward pass (the model, or DDP)
    optimizers: list              # stepped after every batch
    train_data: object            # a BinnedDataset
    batch_size: int
    seed: int
    epochs: int
    out: Path
    bar_name: str = "epoch"
    main: bool = True             # this process writes the files (rank 0)
    augment = None                # an augment.Augmenter for the training batches, or None
    device: torch.device = torch.device("cpu")   # where the model is (batches go there)

    def forward(self, x):
        return self.net(x)

    def begin_epoch(self, epoch: int) -> None:
        pass

    def batch(self, x, y):
        """The share of a batch this process trains on (None: skip the batch)."""
        return x, y

    def after_step(self) -> None:
        pass

    def reduce(self, totals: EpochTotals) -> EpochTotals:
        """Totals summed over processes (distributed training)."""
        return totals

    def end_epoch(self, epoch: int) -> tuple[float, dict]:
        """Step the schedulers and validate: (validation accuracy, extra record fields)."""
        raise NotImplementedError

    def eligible(self, epoch: int) -> bool:
        """Whether this epoch's network may become the best one."""
        return True

    def save_best(self, epoch: int, valid_acc: float) -> None:
        raise NotImplementedError

    def checkpoint(self, state: dict) -> dict:
        raise NotImplementedError

    def log_line(self, rec: dict) -> str:
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for the other processes (distributed training)."""


def _train_one_epoch(task: Task, epoch: int, progress: bool) -> EpochTotals:
    """One epoch of steps. Loss and correct counts are summed on the device (float64,
    the same sums as Python floats would give), so a step waits for the device only when
    a progress bar is drawn; one transfer at the end of the epoch."""
    task.model.train()
    dev = task.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct_sum = torch.zeros((), dtype=torch.int64, device=dev)
    n = 0
    n_batches = (len(task.train_data) + task.batch_size - 1) // task.batch_size
    bar = P.bar(D.iterate_batches(task.train_data, task.batch_size, shuffle=True,
                                  seed=task.seed, epoch=epoch),
                enabled=progress, total=n_batches, leave=False, unit="batch",
                desc=f"{task.bar_name} {epoch + 1}/{task.epochs}")
    for index, (x, y) in enumerate(bar):
        x, y = to_device(x, dev), to_device(y, dev)
        if task.augment:   # on the device, the whole (global) batch before a process's share
            x, y = task.augment(x, y, batch_generator(task.seed, epoch, index, dev))
        share = task.batch(x, y)
        if share is None:
            continue
        x, y = share
        u = task.forward(x)
        loss = loss_fn(u, y)
        for opt in task.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in task.optimizers:
            opt.step()
        task.after_step()
        with torch.no_grad():
            label = y if y.ndim == 1 else y.argmax(1)   # mixed targets: the larger share
            correct_sum += (scores_from_membrane(u).argmax(1) == label).sum()
            loss_sum += loss.detach().to(torch.float64) * len(y)
        n += len(y)
        if not bar.disable:     # drawn: the only per-step wait for the device
            bar.set_postfix(loss=f"{float(loss_sum) / n:.3f}",
                            acc=f"{int(correct_sum) / n:.3f}")
    bar.close()
    return task.reduce(EpochTotals(float(loss_sum), int(correct_sum), n))


def run_epochs(task: Task, state: dict, *, progress: bool, log,
               stop_after_epoch: int | None = None) -> bool:
    """Train the epochs ``state`` has not done yet (module docstring); True when all
    ``task.epochs`` are done, False when ``stop_after_epoch`` ended the call first."""
    out = task.out
    if task.main:   # what the checkpoint has seen (drops a line written after it)
        atomic_write(out / "metrics.jsonl",
                     "".join(json.dumps(m) + "\n" for m in state["metrics"]))
    task.sync()
    for epoch in range(state["epoch"], task.epochs):
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            return False
        t0 = time.perf_counter()
        task.begin_epoch(epoch)
        tot = _train_one_epoch(task, epoch, progress)
        valid_acc, fields = task.end_epoch(epoch)
        rec = {"epoch": epoch + 1, "loss": tot.loss / tot.n, "train_acc": tot.correct / tot.n,
               "valid_acc": valid_acc, **fields,
               "seconds": round(time.perf_counter() - t0, 2)}
        state["metrics"].append(rec)
        state["epoch"] = epoch + 1
        if task.eligible(epoch) and valid_acc > state["best_valid"]:
            state["best_valid"], state["best_epoch"] = valid_acc, epoch + 1
            if task.main:
                task.save_best(epoch, valid_acc)
        if task.main:
            save_torch(task.checkpoint(state), out / "checkpoint.pt")
            append_line(out / "metrics.jsonl", json.dumps(rec))
            tracking.record(out, rec)          # --log tensorboard / wandb (no-op without)
        task.sync()
        log(task.log_line(rec))
    return True
