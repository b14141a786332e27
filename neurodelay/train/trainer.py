"""Training loop for DelaySNN (the paper's recipe) with atomic checkpoints and exact resume.

A run directory holds:
    config.json      every resolved setting (model, training, data)
    metrics.jsonl    one line per finished epoch
    checkpoint.pt    latest state (model, optimizer, schedulers, RNG, metrics), atomic
    best.pt          model with the best validation accuracy (discrete model), atomic
    result.json      final discrete test accuracy of best.pt

Recipe (README, "Model and training"; Hammouamri et al. 2023): Adam for all groups; weights lr 1e-3, weight decay 1e-5 (0 for BN),
OneCycle to 5e-3 over the run; positions lr 100x, no weight decay, cosine annealing.
Schedulers step once per epoch. Sigma decays per epoch over the first quarter.
Positions are clamped and connectivity masks re-applied after every batch.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from neurodelay import data as D
from neurodelay import options as O
from neurodelay.data import DataConfig, Splits, load_splits
from neurodelay.devices import describe_device, device_line, precision, resolve_device
from neurodelay.errors import OptionError, RunError
from neurodelay.fs import atomic_write
from neurodelay.options import check_model_memory
from neurodelay.runs import (
    load_checkpoint,
    open_run,
    require_keys,
)
from neurodelay.train import native
from neurodelay.train.augment import Augmenter
from neurodelay.train.augment import canonical as augment_canonical
from neurodelay.train.augment import describe as describe_augment
from neurodelay.train.loaders import load_model
from neurodelay.train.loop import (
    EpochTotals,
    Task,
    run_epochs,
    save_torch,
    to_device,
    writing_run,
)
from neurodelay.train.model import (
    DelaySNN,
    ModelConfig,
    scores_from_membrane,
    sigma_schedule,
)


@dataclass
class TrainConfig:
    epochs: int = 150
    batch_size: int = 256
    lr: float = 1e-3
    max_lr: float = 5e-3
    weight_decay: float = 1e-5
    position_lr_factor: float = 100.0
    sigma: str = "decreasing"          # decreasing | constant
    learn: str = "weights+delays"      # weights+delays | weights | delays
    seed: int = 0
    eval_batch_size: int = 256
    reference_kernels: bool = False    # train through dcls + spikingjelly (slow; comparisons)
    augment: str = ""                  # --augment setting, canonical form ("" = none)

    def __post_init__(self):
        """Every field checked (OptionError naming the CLI option, the value, the range)."""

        O.check_choice(self.learn, "--learn", ("weights+delays", "weights", "delays"))
        O.check_choice(self.sigma, "--sigma", ("decreasing", "constant"))
        self.epochs = O.check_int(self.epochs, "--epochs", "the number of training epochs",
                                  lo=1)
        self.batch_size = O.check_int(self.batch_size, "--batch-size",
                                      "the training batch size (samples per step)", lo=1)
        self.eval_batch_size = O.check_int(self.eval_batch_size, "eval_batch_size",
                                           "the evaluation batch size", lo=1)
        # 0 is allowed: it freezes what it drives (tests use it; --learn says it better)
        self.lr = O.check_float(self.lr, "--lr", "the initial weight learning rate", lo=0)
        self.max_lr = O.check_float(self.max_lr, "--max-lr",
                                    "the OneCycle peak learning rate (weights)", lo=0)
        self.weight_decay = O.check_float(self.weight_decay, "weight_decay",
                                          "the weight decay", lo=0)
        self.position_lr_factor = O.check_float(
            self.position_lr_factor, "--position-lr-factor",
            "the delay-position learning rate factor (position lr = lr x this)", lo=0)
        self.seed = O.check_int(self.seed, "--seed", "the random seed", lo=0, hi=O.SEED_MAX)
        self.reference_kernels = bool(self.reference_kernels)
        self.augment = augment_canonical(self.augment)


# --------------------------------------------------------------------------- utils
def check_training_memory(mc: ModelConfig, tc: TrainConfig, splits: Splits) -> None:
    """ResourceLimitError (before anything is allocated or written) when training ``mc``
    on ``splits`` would exceed the memory limit of :mod:`neurodelay.options`: a training
    batch as long as the longest training sample, and an evaluation batch of the
    validation/test sets padded to their longest sample."""

    learned = mc.delays == "learned"
    rw = mc.rec_window if mc.recurrent else 0
    check_model_memory(mc.n_inputs, mc.hidden, mc.n_outputs, mc.window,
                       min(tc.batch_size, len(splits.train)), splits.train.max_steps,
                       training=True, learned=learned, what="training the model",
                       recurrent_window=rw)
    evals = [d for d in (splits.valid, splits.test) if d is not None]
    check_model_memory(mc.n_inputs, mc.hidden, mc.n_outputs, mc.window,
                       min(tc.eval_batch_size, max(len(d) for d in evals)),
                       max(d.max_steps for d in evals), training=False, learned=learned,
                       recurrent_window=rw,
                       what="evaluating the model on the validation/test samples (padded "
                            "to the longest one)",
                       how="Cut long samples with --max-time SECONDS, or use a smaller "
                           "--max-delay or --hidden")


# --------------------------------------------------------------------------- eval
@torch.no_grad()
def predict(model: DelaySNN, ds, batch_size: int = 256, pad_to: int | None = None):
    """Discrete-model predictions for every sample of ``ds`` (fixed padding: ds.max_steps).

    Returns (predictions int64 (N,), scores float (N, C)).
    """
    if len(ds) == 0:
        raise D.DataError(f"{getattr(ds, 'source', '') or 'the data set'}: no samples to "
                          f"evaluate")
    was = model.training
    model.eval()
    dev = _model_device(model)
    pad_to = ds.max_steps if pad_to is None else pad_to
    preds, scores = [], []
    for x, _ in D.iterate_batches(ds, batch_size, shuffle=False, pad_to=pad_to):
        sc = scores_from_membrane(model(to_device(x, dev), discrete=True))
        scores.append(sc)
        preds.append(sc.argmax(1))
    model.train(was)
    return torch.cat(preds).cpu().numpy(), torch.cat(scores).cpu().numpy()


def _model_device(model) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def accuracy(model: DelaySNN, ds, batch_size: int = 256) -> float:
    pred, _ = predict(model, ds, batch_size)
    return float((pred == ds.labels).mean())


# --------------------------------------------------------------------------- training
def build_optim(model: DelaySNN, tc: TrainConfig):
    weights = [p for p in model.weight_params()]
    positions = [p for p in model.position_params() if p.requires_grad]
    if tc.learn == "delays":
        for p in weights:
            p.requires_grad_(False)
        weights = []
    if tc.learn == "weights":
        for p in positions:
            p.requires_grad_(False)
        positions = []
    groups_w = [{"params": weights, "lr": tc.lr, "weight_decay": tc.weight_decay},
                {"params": model.bn_params(), "lr": tc.lr, "weight_decay": 0.0}]
    opt_w = torch.optim.Adam([g for g in groups_w if g["params"]], lr=tc.lr)
    sched_w = torch.optim.lr_scheduler.OneCycleLR(opt_w, max_lr=tc.max_lr, total_steps=tc.epochs)
    opt_p = sched_p = None
    if positions:
        opt_p = torch.optim.Adam(positions, lr=tc.lr * tc.position_lr_factor, weight_decay=0.0)
        sched_p = torch.optim.lr_scheduler.CosineAnnealingLR(opt_p, T_max=tc.epochs)
    return opt_w, sched_w, opt_p, sched_p


def _rng_state(device=None):
    """The RNG states as tensors and plain numbers (what the safe checkpoint loader
    reads; no numpy objects in the file); on CUDA also the device's generator (dropout
    masks are drawn there)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"name": str(name), "key": torch.from_numpy(key.astype(np.int64)),
                    "pos": int(pos), "has_gauss": int(has_gauss),
                    "cached_gaussian": float(gauss)}}
    if device is not None and device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st, device=None):
    """Restore :func:`_rng_state` (also the numpy tuple that checkpoints written before
    it hold). The CUDA generator's state is restored on a CUDA device only (a run
    resumed on another device draws its dropout masks from that device's generator)."""
    torch.set_rng_state(st["torch"])
    if device is not None and device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)
    s = st["numpy"]
    if isinstance(s, dict):
        key = np.asarray(s["key"].numpy() if torch.is_tensor(s["key"]) else s["key"])
        s = (s["name"], key.astype(np.uint32), int(s["pos"]), int(s["has_gauss"]),
             float(s["cached_gaussian"]))
    try:
        np.random.set_state(s)
    except (TypeError, ValueError) as e:
        raise RunError(f"the checkpoint's numpy random state is not one ({e})") from None


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def distributed_context(device=None):
    """(rank, world_size) under torchrun (initialises the process group), else (0, 1).

    Backend: nccl when the training device is CUDA (one GPU per process: cuda:LOCAL_RANK,
    :func:`neurodelay.devices.resolve_device`), gloo on the CPU. Each rank trains on its
    share rank::world of every global batch of ``batch_size`` samples; DDP averages
    gradients, so the parameters stay identical on every rank.
    """

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    cuda = device is not None and torch.device(device).type == "cuda"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _all_sum(values: list[float], world: int, device=None) -> list[float]:
    if world <= 1:
        return values

    t = torch.tensor(values, dtype=torch.float64, device=device)   # nccl: on the GPU
    dist.all_reduce(t)
    return t.tolist()


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def flush_denormal_enabled() -> bool:
    """Whether torch flushes subnormal floats to zero now (torch has no getter: a
    subnormal input multiplied by 1 reads as 0 when the CPU treats denormals as zero)."""
    return float(torch.tensor([1e-39], dtype=torch.float32).mul(1.0)[0]) == 0.0


def train(run_dir: str | Path, mc: ModelConfig, tc: TrainConfig, dc: DataConfig, *,
          resume: bool = False, overwrite: bool = False, progress: bool = True,
          stop_after_epoch: int | None = None, log=_log, device="auto",
          tf32: bool = False) -> dict:
    """Train (or resume) a run; returns the final result dict.

    The run folder is locked while training (a second process fails at once, naming this
    one), must be empty or new unless ``resume`` (continue its checkpoint) or
    ``overwrite`` (replace its run files), and temporary files of interrupted writes are
    removed (:func:`neurodelay.train.loop.writing_run`). Global state is left as found:
    torch's RNG, numpy's global RNG and the flush-denormal mode are restored when the
    call returns or fails. ``stop_after_epoch`` ends the call after that many epochs
    (used to test resume). ``device``: "auto", "cpu", "cuda" or "cuda:N"
    (:func:`neurodelay.devices.resolve_device`; not part of the run's configuration: a run
    resumes on any device); ``tf32``: allow TF32 matmuls on CUDA (off: float32 as on the
    CPU; :func:`neurodelay.devices.precision`).
    """
    run = Path(run_dir)
    dev = resolve_device(device)
    rank, world = distributed_context(dev)
    ftz = flush_denormal_enabled()
    cuda_rng = torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None
    try:
        with writing_run(run, "train", resume=resume, overwrite=overwrite, log=log,
                         lock=rank == 0), precision(dev, tf32):
            return _train(run, mc, tc, dc, rank=rank, world=world, resume=resume,
                          progress=progress, stop_after_epoch=stop_after_epoch, log=log,
                          device=dev, tf32=bool(tf32))
    finally:
        torch.set_flush_denormal(ftz)
        if cuda_rng is not None:            # the device's generator as found, too
            torch.cuda.set_rng_state(cuda_rng, dev)


def run_configs(run) -> tuple[ModelConfig, TrainConfig, DataConfig]:
    """The typed settings a trained run's config.json records (the one place they are
    read back); RunError naming the file when they do not fit this neurodelay."""
    run = open_run(run, kinds=("trained",))
    saved = run.config
    try:
        return (ModelConfig(**saved["model"]), TrainConfig(**saved["train"]),
                DataConfig(**saved["data"]))
    except TypeError as e:
        raise RunError(f"{run.file('config.json')}: not a config.json neurodelay wrote "
                       f"({e}); start a new run") from None


def _resumed_configs(run: Path):
    ckpt_path = run / "checkpoint.pt"
    if not ckpt_path.exists():
        raise RunError(f"{ckpt_path}: nothing to resume (no checkpoint in {run}); start "
                       f"a new run without --resume")
    return run_configs(open_run(run, kinds=("trained",)))


class _Training(Task):
    """The paper's recipe as a :class:`~neurodelay.train.loop.Task` (module docstring)."""

    bar_name = "epoch"

    def __init__(self, run: Path, mc: ModelConfig, tc: TrainConfig, splits: Splits, *,
                 rank: int, world: int, device=None):
        self.out, self.mc, self.tc, self.splits = run, mc, tc, splits
        self.rank, self.world, self.main = rank, world, rank == 0
        self.device = torch.device("cpu") if device is None else torch.device(device)
        # built on the CPU (the same initial parameters on every device), then moved
        self.model = DelaySNN(mc, seed=tc.seed).to(self.device)
        self.opt_w, self.sched_w, self.opt_p, self.sched_p = build_optim(self.model, tc)
        self.optimizers = [o for o in (self.opt_w, self.opt_p) if o is not None]
        self.net = self.model
        if world > 1:
            if tc.batch_size % world:
                raise OptionError(f"--batch-size {tc.batch_size}: not divisible by the "
                                  f"{world} processes; every process takes an equal share "
                                  f"of a batch")
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.train_data, self.batch_size = splits.train, tc.batch_size
        self.seed, self.epochs = tc.seed, tc.epochs
        self.augment = Augmenter(tc.augment, window=mc.window, n_classes=mc.n_outputs)
        self.sigma = None

    def restore(self, ck: dict, where: str) -> dict:
        require_keys(ck, ("model", "opt_w", "sched_w", "rng", "state"), where)
        self.model.load_state_dict(ck["model"])
        self.opt_w.load_state_dict(ck["opt_w"])
        self.sched_w.load_state_dict(ck["sched_w"])
        if self.opt_p is not None:
            self.opt_p.load_state_dict(ck["opt_p"])
            self.sched_p.load_state_dict(ck["sched_p"])
        _set_rng_state(ck["rng"], self.device)
        return ck["state"]

    def forward(self, x):
        return self.net(x, discrete=False, reference=self.tc.reference_kernels)

    def begin_epoch(self, epoch: int) -> None:
        self.sigma = sigma_schedule(epoch, self.tc.epochs, self.mc.sigma0, self.tc.sigma)
        self.model.set_sigma(self.sigma)

    def batch(self, x, y):
        if self.world == 1:
            return x, y
        if len(y) < self.world:   # a last partial batch too small to share: skipped
            return None           # by every rank alike
        return x[self.rank::self.world], y[self.rank::self.world]

    def after_step(self) -> None:
        self.model.after_step()

    def reduce(self, tot: EpochTotals) -> EpochTotals:
        loss, correct, n = _all_sum([tot.loss, tot.correct, tot.n], self.world,
                                    self.device if self.device.type == "cuda" else None)
        return EpochTotals(loss, int(correct), int(n))

    def end_epoch(self, epoch: int):
        lrs = {"lr_weights": self.opt_w.param_groups[0]["lr"],
               "lr_positions": self.opt_p.param_groups[0]["lr"] if self.opt_p else 0.0}
        self.sched_w.step()
        if self.sched_p is not None:
            self.sched_p.step()
        valid_acc = accuracy(self.model, self.splits.valid, self.tc.eval_batch_size)
        learned = self.mc.delays == "learned" or self.mc.rec_learned
        sigma = self.sigma + 0.27 if learned else None
        return valid_acc, {"sigma": sigma, **lrs}

    def save_best(self, epoch: int, valid_acc: float) -> None:
        save_torch({"model": self.model.state_dict(), "model_config": self.mc.to_dict(),
                    "epoch": epoch + 1, "valid_acc": valid_acc}, self.out / "best.pt")

    def checkpoint(self, state: dict) -> dict:
        ck = {"model": self.model.state_dict(), "opt_w": self.opt_w.state_dict(),
              "sched_w": self.sched_w.state_dict(), "rng": _rng_state(self.device),
              "state": state}
        if self.opt_p is not None:
            ck["opt_p"], ck["sched_p"] = self.opt_p.state_dict(), self.sched_p.state_dict()
        return ck

    def log_line(self, rec: dict) -> str:
        return (f"epoch {rec['epoch']:3d}/{self.tc.epochs}  loss {rec['loss']:.4f}  train "
                f"{rec['train_acc']:.3f}  valid(discrete) {rec['valid_acc']:.3f}"
                + (f"  sigma {rec['sigma']:.2f}" if rec["sigma"] is not None else "")
                + f"  {rec['seconds']:.1f}s")

    def sync(self) -> None:
        _barrier(self.world)


def _write_config(task: _Training, dc: DataConfig, log, runtime: dict) -> None:
    splits, mc, counts = task.splits, task.mc, task.model.count_parameters()
    cfg = {"kind": "trained", "model": mc.to_dict(), "train": asdict(task.tc),
           "data": asdict(dc), "parameters": counts,
           "class_names": splits.train.class_names,
           "splits": {"train": len(splits.train), "valid": len(splits.valid),
                      "test": len(splits.test), "notes": splits.notes},
           "world_size": task.world, **runtime}
    atomic_write(task.out / "config.json", json.dumps(cfg, indent=2))
    rec = (f", recurrent (delays={mc.recurrent_delays}, window {mc.rec_window} steps)"
           if mc.recurrent else "")
    log(f"model: {mc.hidden} hidden, window {mc.window} steps, delays={mc.delays}{rec}, "
        f"parameters {counts['total']:,} (weights {counts['weights']:,}, "
        f"delays {counts['delays']:,})")
    if task.tc.augment:
        log(f"augment (training batches only): "
            f"{describe_augment(task.tc.augment, window=mc.window, n_in=mc.n_inputs)}")


def _train(run: Path, mc, tc, dc, *, rank: int, world: int, resume: bool, progress: bool,
           stop_after_epoch, log, device=None, tf32: bool = False) -> dict:
    main_rank = rank == 0
    if not main_rank:
        log = lambda *a, **k: None  # noqa: E731
        progress = False
    if resume:
        mc, tc, dc = _resumed_configs(run)
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    if tc.reference_kernels:
        # dcls' Gaussian kernels at small sigma are full of subnormal floats, which slow
        # CPUs ~2x more; flushing them to zero changes nothing above 1e-38
        torch.set_flush_denormal(True)
    splits = load_splits(dc, progress=progress)
    check_training_memory(mc, tc, splits)
    for note in splits.notes:
        log(f"note: {note}")
    task = _Training(run, mc, tc, splits, rank=rank, world=world, device=device)
    # where it ran (not a setting: a run resumes on any device); config.json has the
    # device it started on, result.json the one it finished on
    runtime = {"device": describe_device(task.device), "tf32": tf32}
    log(device_line(runtime["device"]) + (", TF32 matmuls allowed" if tf32 and
                                          task.device.type == "cuda" else ""))
    if world > 1:
        log(f"distributed: {world} processes, {tc.batch_size // world} samples each per "
            f"global batch of {tc.batch_size}; BatchNorm statistics are per process")
    state = {"epoch": 0, "metrics": [], "best_valid": -1.0, "best_epoch": -1}
    if resume:
        state = task.restore(load_checkpoint(run / "checkpoint.pt", "training checkpoint"),
                             str(run / "checkpoint.pt"))
        log(f"resuming {run} after epoch {state['epoch']}/{tc.epochs}")
    elif main_rank:
        run.mkdir(parents=True, exist_ok=True)
        _write_config(task, dc, log, runtime)
    st = native.status()
    if main_rank and not st.available:   # integer delays (validation, fixed delays) slower
        log(f"note: integer-delay operator on its {st.describe()}")
    if not run_epochs(task, state, progress=progress, log=log,
                      stop_after_epoch=stop_after_epoch):
        return {"finished": False, "epoch": state["epoch"]}
    test_acc = accuracy(load_model(run).to(task.device), splits.test, tc.eval_batch_size)
    result = {"finished": True, "test_accuracy": test_acc, "n_test": len(splits.test),
              "best_epoch": state["best_epoch"], "best_valid_accuracy": state["best_valid"],
              "parameters": task.model.count_parameters(), "notes": splits.notes,
              "world_size": world, **runtime}
    if main_rank:
        atomic_write(run / "result.json", json.dumps(result, indent=2))
    _barrier(world)
    return {**result, "rank": rank}
