"""Hardware-exact fine-tuning: train the network the chip runs, so the PyTorch model and the
chip agree by construction and low-bit deployments keep their accuracy.

``finetune(parent, out, config)`` starts from a trained (or imported) run:

1. its float network's delays are reduced to the delay bits (``clip``: long delays
   clipped; ``coarse``: the range kept on a k-step grid; ``auto``: whichever gives the
   better bit-accurate validation accuracy after post-training quantization -- reported);
2. it is quantized once (:func:`neurodelay.passes.quantize`), calibrated on a
   seeded subset of the TRAINING split, with the requested weight bits (the target may
   only be narrowed);
3. :class:`neurodelay.train.hwmodel.HwSNN` -- whose forward pass is the target's integer
   arithmetic, exactly as the bit-accurate simulator computes it -- is trained with Adam
   (cosine learning rate) on latent float weights and biases, straight-through
   estimators for the roundings and the float model's ATan surrogate for spikes;
   ``prune`` removes that fraction of each layer's synapses by magnitude, ramped up over
   the first half of the epochs;
4. after every epoch the integer network is evaluated bit-accurately on the VALIDATION
   split (the run's own; if the run has none, 10 % of its training split, seeded -- never
   test data) and the best epoch (the post-training network counts as epoch 0) is kept.

The output is a normal run of kind ``finetuned``: ``qnet.h5`` (the chip's integers),
``best.pt`` (latents of the best epoch), ``checkpoint.pt`` (resume), ``metrics.jsonl``,
``result.json`` (test accuracy of the best network, which ``eval`` reproduces),
``config.json``. ``export`` writes its artifact without re-quantizing; ``verify`` shows the
PyTorch (hardware-exact) model equal to the bit-accurate simulator.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from neurodelay import options as O
from neurodelay import passes
from neurodelay.core.network_io import save_network
from neurodelay.data import load_binned, load_splits, pad_batch, rundata
from neurodelay.data.rundata import check_classes, run_data_config, run_train_data
from neurodelay.devices import describe_device, device_line, precision, resolve_device
from neurodelay.errors import OptionError
from neurodelay.fs import atomic_write
from neurodelay.hw.resources import resource_report
from neurodelay.hw.target import load_target
from neurodelay.runs import (
    load_checkpoint,
    open_run,
    require_keys,
)
from neurodelay.sim import bitsim
from neurodelay.threads import torch_threads
from neurodelay.train.augment import Augmenter
from neurodelay.train.augment import canonical as augment_canonical
from neurodelay.train.hwmodel import HwSNN
from neurodelay.train.loaders import float_network
from neurodelay.train.loop import Task, run_epochs, save_torch, writing_run

DELAY_MODES = ("auto", "clip", "coarse")
VALID_FRACTION = 0.1                    # carved from training when a run has no valid split


@dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run (saved in its config.json)."""

    target: str = "loihi2"
    weight_bits: int | None = None      # None: the target's
    delay_bits: int | None = None       # None: the target's
    delay_mode: str = "auto"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    prune: float = 0.0
    seed: int = 0
    calib_samples: int = 256
    alpha: float = 5.0
    train_file: str | None = None       # for runs without data of their own (imported)
    augment: str = ""                   # --augment setting (neurodelay.train.augment)

    def __post_init__(self):
        # the library validates like the CLI (neurodelay.options): integers are integers
        O.check_choice(self.delay_mode, "--delay-mode", DELAY_MODES)
        self.epochs = O.check_int(self.epochs, "--epochs", "the number of fine-tuning epochs",
                                  lo=1)
        self.batch_size = O.check_int(self.batch_size, "--batch-size", "the batch size", lo=1)
        self.lr = O.check_float(self.lr, "--lr", "the learning rate", lo=0, lo_open=True)
        self.prune = O.check_float(self.prune, "--prune", "the fraction of synapses removed "
                                   "by magnitude", lo=0, hi=1, hi_open=True)
        if self.weight_bits is not None:      # the target decides the upper bound
            self.weight_bits = O.check_int(self.weight_bits, "--weight-bits",
                                           "weight mantissa bits", lo=1)
        if self.delay_bits is not None:
            self.delay_bits = O.check_int(self.delay_bits, "--delay-bits", "delay bits",
                                          lo=1, hi=16)
        self.seed = O.check_int(self.seed, "--seed", "the random seed", lo=0)
        self.calib_samples = O.check_int(self.calib_samples, "--calib-samples",
                                         "the number of calibration samples", lo=1)
        self.alpha = O.check_float(self.alpha, "--alpha", "the surrogate gradient's "
                                   "sharpness", lo=0, lo_open=True)
        self.augment = augment_canonical(self.augment)


# ----------------------------------------------------------------------------- data

def training_splits(parent, seed: int, train_file: str | None = None):
    """(train, valid, note): the parent's training split (or ``train_file``, binned with
    the run's settings) and a validation split that is never test data."""
    dc = run_data_config(parent)
    if train_file:

        train = load_binned(train_file, channel_bin=dc.channel_bin, dt=dc.dt,
                            max_time=dc.max_time, n_channels=dc.n_channels,
                            cache_dir=dc.cache_dir, progress=False)
        train = check_classes(parent, train)
    elif not parent.has_own_data():
        raise OptionError(f"{parent.path} has no training data of its own (an imported "
                          f"graph?): pass --train-file F, an SHD-layout file of its task")
    else:
        train = run_train_data(parent)
    if not train_file and (dc.valid or dc.valid_speakers):

        valid = load_splits(dc).valid
        return train, valid, "the run's own validation split"
    rng = np.random.default_rng(seed + 4242)
    idx = rng.permutation(len(train))
    n_val = max(1, int(round(VALID_FRACTION * len(train))))
    valid, train = train.subset(np.sort(idx[:n_val])), train.subset(np.sort(idx[n_val:]))
    return train, valid, (f"{n_val} samples ({VALID_FRACTION:.0%}) of the training split, "
                          f"seeded (the run has no validation split of its own; its test "
                          f"set is never used)")


def _padded(ds, idx=None):
    samples = ds.samples if idx is None else [ds.samples[i] for i in idx]
    return pad_batch(samples)


def _bit_accuracy(qnet, ds, batch_size: int = 256) -> float:
    x = pad_batch(ds.samples, pad_to=ds.max_steps)
    pred, _ = bitsim.predict(qnet, x, batch_size=batch_size)
    return float(np.mean(pred == ds.labels))


# ----------------------------------------------------------------------------- start

def calibration_batch(train, fc: FinetuneConfig):
    """(padded batch, n): the seeded ``fc.calib_samples`` training samples the start is
    calibrated on (never validation or test data)."""
    rng = np.random.default_rng(fc.seed)
    n = min(int(fc.calib_samples), len(train))
    return _padded(train, np.sort(rng.permutation(len(train))[:n])), n


def start_network(reduced, tgt, fc: FinetuneConfig, weight_range: str, calib):
    """(qnet, QuantReport): ``reduced`` (delays already within the delay bits) quantized
    for ``tgt`` at ``fc.weight_bits`` with ``weight_range``: one start candidate."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return passes.quantize(reduced, tgt, data=calib, weight_bits=fc.weight_bits,
                               weight_range=weight_range)


@dataclass
class Candidate:
    """One post-training quantization of the parent, scored on validation."""

    mode: str                 # delay reduction: "clip" or "coarse"
    weight_range: str         # "max" or "mse"
    valid_accuracy: float     # bit-accurate
    changes: dict             # the delay pass's report (delays_changed, delay_step, ...)
    warnings: list
    qnet: object              # the QNetwork
    float_net: object         # the float network after delay reduction

    def summary(self) -> dict:
        """What config.json records of it (no networks)."""
        return {"mode": self.mode, "weight_range": self.weight_range,
                "valid_accuracy": self.valid_accuracy, **self.changes,
                "warnings": self.warnings}


@dataclass
class FinetuneStart:
    """Where fine-tuning starts: the best candidate, all of them, and the calibration."""

    chosen: Candidate
    candidates: list[Candidate]
    n_calib: int              # calibration samples (of the training split)

    @property
    def qnet(self):
        return self.chosen.qnet


def starting_point(parent, fc: FinetuneConfig, train, valid, log) -> FinetuneStart:
    """The post-training quantized network to start from, with the delay mode chosen on
    validation accuracy for ``auto`` (every candidate tried is kept)."""
    tgt = load_target(fc.target)
    net = float_network(parent)
    bits = tgt.delay_bits if fc.delay_bits is None else int(fc.delay_bits)
    if bits > tgt.delay_bits:
        raise OptionError(f"--delay-bits {bits}: target {tgt.name!r} holds {tgt.delay_bits} "
                          f"delay bits; the target file is the truth, an option may only "
                          f"narrow it")
    calib, n = calibration_batch(train, fc)
    modes = ["clip", "coarse"] if fc.delay_mode == "auto" else [fc.delay_mode]
    candidates: list[Candidate] = []
    for mode in modes:
        reduced, rep = passes.reduce_delays(net, bits, mode, tgt.max_delay)
        if rep.changes["delays_changed"] == 0 and candidates and \
                candidates[-1].changes["delays_changed"] == 0:
            continue                              # same delays: same candidates
        for weight_range in passes.WEIGHT_RANGES:
            qnet, qrep = start_network(reduced, tgt, fc, weight_range, calib)
            acc = _bit_accuracy(qnet, valid)
            candidates.append(Candidate(mode, weight_range, acc, dict(rep.changes),
                                        list(qrep.warnings), qnet, reduced))
            log(f"post-training {qrep.weight_bits}-bit weights ({weight_range} range), "
                f"{bits}-bit delays ({mode}): bit-accurate validation accuracy {acc:.4f} "
                f"({rep.changes['delays_changed']} delays changed)")
    best = max(candidates, key=lambda c: c.valid_accuracy)
    return FinetuneStart(best, candidates, n)


# ----------------------------------------------------------------------------- training

def _prune_masks(model, fraction: float) -> None:
    """Keep the largest-|latent| (1 - fraction) of each layer's synapses."""
    with torch.no_grad():
        for layer in model.layers:
            w = layer.weight.abs() * (layer.mask > 0)
            n = w.numel()
            keep = int(round((1.0 - fraction) * n))
            mask = torch.zeros(n, dtype=layer.mask.dtype, device=layer.mask.device)
            if keep:
                mask[torch.argsort(w.reshape(-1), descending=True, stable=True)[:keep]] = 1
            layer.mask.copy_(mask.reshape(layer.mask.shape) * (layer.mask > 0))
            layer.weight.mul_(layer.mask)


def _prune_schedule(epoch: int, epochs: int, fraction: float) -> float:
    """Sparsity after ``epoch`` (0-based): ramps linearly to ``fraction`` over the first
    half of the epochs."""
    if fraction <= 0:
        return 0.0
    ramp = max(1, epochs // 2)
    return fraction * min(1.0, (epoch + 1) / ramp)


def finetune(parent, out, fc: FinetuneConfig | None = None, *, resume: bool = False,
             overwrite: bool = False, progress: bool = True, threads: int | None = None,
             stop_after_epoch: int | None = None, log=print, device="auto") -> dict:
    """Fine-tune run ``parent`` into run folder ``out`` (module docstring). Returns the
    result dict (also in ``out/result.json``); ``stop_after_epoch`` ends the call early
    (tests of ``resume``), returning {"finished": False, "epoch": n}. ``device``: where
    the hardware-exact model trains (:func:`neurodelay.devices.resolve_device`); it
    computes in float64 everywhere, so the integers are the same on every device.


    Examples:
        Fine-tune a small run to 4-bit weights for one epoch; the result is the chip's
        integers, so its test accuracy is the bit-accurate simulator's:

        >>> import tempfile
        >>> from neurodelay import api
        >>> from neurodelay.data import make_synthetic
        >>> tmp = tempfile.mkdtemp()
        >>> files = make_synthetic(tmp, sizes={"train": 64, "valid": 32, "test": 32})
        >>> _ = api.train_run(f"{tmp}/run", preset="tiny", hidden=[8], epochs=1,
        ...                   train_file=str(files["train"]), test_file=str(files["test"]),
        ...                   cache_dir=tmp, threads=1, progress=False, log=lambda m: None)
        >>> from neurodelay.train.finetune import FinetuneConfig, finetune
        >>> res = finetune(f"{tmp}/run", f"{tmp}/run4", FinetuneConfig(weight_bits=4, epochs=1),
        ...                progress=False, threads=1, log=lambda m: None)
        >>> res["weight_bits"], res["finished"]
        (4, True)
    """
    out = Path(out)
    dev = resolve_device(device)
    with torch_threads(threads), writing_run(out, "finetune", resume=resume,
                                             overwrite=overwrite, log=log), precision(dev):
        if resume:
            r = open_run(out, kinds=("finetuned",))
            fc = FinetuneConfig(**r.config["finetune"])
            parent = r.parent_path()
        return _finetune(open_run(parent, kinds=("trained", "imported")), out,
                         fc or FinetuneConfig(), resume, progress, log, stop_after_epoch,
                         device=dev)


class _FineTuning(Task):
    """Hardware-exact fine-tuning as a :class:`~neurodelay.train.loop.Task`: the HwSNN's
    integers are validated on the bit-accurate simulator every epoch."""

    bar_name = "finetune"

    def __init__(self, out: Path, fc: FinetuneConfig, start: FinetuneStart, bits: int,
                 train, valid, device=None):
        self.out, self.fc, self.valid = out, fc, valid
        self.device = torch.device("cpu") if device is None else torch.device(device)
        # latents start at the float weights the integers were rounded from
        latent = [(L.weight.astype(np.float64), L.bias.astype(np.float64))
                  + ((L.rec_weight.astype(np.float64),) if L.recurrent else ())
                  for L in start.chosen.float_net.layers]
        self.model = HwSNN(start.qnet, bits, alpha=fc.alpha, latent=latent).to(self.device)
        self.net = self.model
        params = self.model.parameters_to_train()
        self.opt = torch.optim.Adam(params, lr=fc.lr)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=fc.epochs)
        self.optimizers = [self.opt]
        self.train_data, self.batch_size = train, fc.batch_size
        self.seed, self.epochs = fc.seed, fc.epochs
        # mask's default time span: a third of the network's delay window, as in training
        window = 1 + max(int(L.delay.max()) if L.delay.size else 0 for L in start.qnet.layers)
        self.augment = Augmenter(fc.augment, window=window,
                                 n_classes=start.qnet.layers[-1].n_out)
        self.sparsity, self.qnet = 0.0, None

    def restore(self, ck: dict, where: str) -> dict:
        require_keys(ck, ("model", "opt", "sched", "state", "rng"), where)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["opt"])
        self.sched.load_state_dict(ck["sched"])
        torch.set_rng_state(ck["rng"])
        return ck["state"]

    def begin_epoch(self, epoch: int) -> None:
        self.sparsity = _prune_schedule(epoch, self.fc.epochs, self.fc.prune)
        if self.sparsity:
            _prune_masks(self.model, self.sparsity)

    def after_step(self) -> None:
        if self.fc.prune:
            with torch.no_grad():
                for layer in self.model.layers:
                    layer.weight.mul_(layer.mask)

    def end_epoch(self, epoch: int):
        lr = self.opt.param_groups[0]["lr"]
        self.sched.step()
        self.qnet = self.model.to_qnetwork()
        return _bit_accuracy(self.qnet, self.valid), {
            "sparsity": self.sparsity, "lr": lr, "synapses": int(self.qnet.n_synapses)}

    def eligible(self, epoch: int) -> bool:
        # with pruning only networks at the requested sparsity can be the result
        return self.sparsity >= self.fc.prune - 1e-12

    def save_best(self, epoch: int, valid_acc: float) -> None:
        save_network(self.qnet, self.out / "qnet.h5")
        save_torch({"model": self.model.state_dict(), "epoch": epoch + 1},
                   self.out / "best.pt")

    def checkpoint(self, state: dict) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "state": state,
                "rng": torch.get_rng_state()}

    def log_line(self, rec: dict) -> str:
        return (f"epoch {rec['epoch']:3d}/{self.fc.epochs}  loss {rec['loss']:.4f}  train "
                f"{rec['train_acc']:.3f}  valid(bit-accurate) {rec['valid_acc']:.3f}"
                + (f"  sparsity {rec['sparsity']:.2f}" if self.fc.prune else "")
                + f"  {rec['seconds']:.1f}s")


def _write_start(out: Path, parent, fc: FinetuneConfig, tgt, start: FinetuneStart,
                 valid_note: str, task: _FineTuning, runtime: dict | None = None) -> None:
    """config.json, the starting qnet.h5 and best.pt (epoch 0) of a new fine-tuned run."""
    c = start.chosen
    cfg = {"kind": "finetuned", "parent": str(parent.path.resolve()),
           "parent_relative": os.path.relpath(parent.path.resolve(), out.resolve()),
           "target": tgt.to_dict(), "finetune": asdict(fc),
           "data": parent.config.get("data"), "class_names": parent.class_names,
           "n_outputs": start.qnet.layers[-1].n_out,
           "start": {"delay_mode": c.mode, "weight_range": c.weight_range,
                     "candidates": [x.summary() for x in start.candidates],
                     "calibration": f"{start.n_calib} samples of the training split, seed "
                                    f"{fc.seed}", "validation": valid_note},
           **(runtime or {})}
    atomic_write(out / "config.json", json.dumps(cfg, indent=2, default=str))
    save_network(start.qnet, out / "qnet.h5")
    save_torch({"model": task.model.state_dict(), "epoch": 0}, out / "best.pt")


def _finetune(parent, out: Path, fc: FinetuneConfig, resume: bool, progress: bool,
              log, stop_after_epoch=None, device=None) -> dict:
    t_start = time.perf_counter()
    torch.manual_seed(fc.seed)
    tgt = load_target(fc.target)
    train, valid, valid_note = training_splits(parent, fc.seed, fc.train_file)
    log(f"fine-tuning {parent.path} for {tgt.name}: {len(train)} training samples, "
        f"validation = {valid_note}")
    start = starting_point(parent, fc, train, valid, log)
    bits = int(start.qnet.weight_bits)
    start.qnet.delay_bits = int(start.chosen.changes["delay_bits"])
    task = _FineTuning(out, fc, start, bits, train, valid, device=device)
    runtime = {"device": describe_device(task.device)}
    log(device_line(runtime["device"]) + ", float64 (exact integers)")
    # the post-training network is epoch 0 and fine-tuning must beat it on validation
    # (with pruning it cannot be the result: it is not at the requested sparsity)
    state = {"epoch": 0, "metrics": [], "best_epoch": 0,
             "best_valid": -1.0 if fc.prune else start.chosen.valid_accuracy}
    if resume:
        state = task.restore(load_checkpoint(out / "checkpoint.pt", "fine-tuning checkpoint"),
                             str(out / "checkpoint.pt"))
        log(f"resuming {out} after epoch {state['epoch']}/{fc.epochs}")
    else:
        _write_start(out, parent, fc, tgt, start, valid_note, task, runtime)
    if not run_epochs(task, state, progress=progress, log=log,
                      stop_after_epoch=stop_after_epoch):
        return {"finished": False, "epoch": state["epoch"]}
    return _final_result(out, tgt, state, start, bits, t_start, runtime)


def _final_result(out: Path, tgt, state: dict, start: FinetuneStart, bits: int,
                  t_start: float, runtime: dict | None = None) -> dict:
    """result.json: the best integers' test accuracy (bit-accurate) and resources."""
    run = open_run(out, kinds=("finetuned",))
    qbest = run.qnetwork()
    test = rundata.run_test_data(run) if run.has_own_data() else None
    res = resource_report(qbest, tgt)
    c = start.chosen
    result = {"finished": True,
              "test_accuracy": _bit_accuracy(qbest, test) if test is not None else None,
              "n_test": len(test) if test is not None else 0,
              "best_epoch": state["best_epoch"],
              "best_valid_accuracy": state["best_valid"],
              "post_training_valid_accuracy": c.valid_accuracy,
              "weight_bits": bits, "delay_bits": c.changes["delay_bits"],
              "delay_mode": c.mode, "delay_step": c.changes["delay_step"],
              "weight_range": c.weight_range,
              "synapses": int(qbest.n_synapses),
              "synaptic_memory_bytes": int(res.totals["synaptic_memory_bytes"]),
              "memory_note": res.memory_formula,
              "seconds": round(time.perf_counter() - t_start, 1), **(runtime or {})}
    atomic_write(out / "result.json", json.dumps(result, indent=2))
    return result
