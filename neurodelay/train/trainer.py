"""Training loop for DelaySNN (the paper's recipe) with atomic checkpoints and exact resume.

A run directory holds:
    config.json      every resolved setting (model, training, data)
    metrics.jsonl    one line per finished epoch
    checkpoint.pt    latest state (model, optimizer, schedulers, RNG, metrics), atomic
    best.pt          model with the best validation accuracy (discrete model), atomic
    result.json      final discrete test accuracy of best.pt

Recipe (method.md): Adam for all groups; weights lr 1e-3, weight decay 1e-5 (0 for BN),
OneCycle to 5e-3 over the run; positions lr 100x, no weight decay, cosine annealing.
Schedulers step once per epoch. Sigma decays per epoch over the first quarter.
Positions are clamped and connectivity masks re-applied after every batch.
"""
from __future__ import annotations

import json
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from neurodelay import data as D
from neurodelay import options as O
from neurodelay._io import append_line, atomic_path, atomic_write
from neurodelay.data import DataConfig, Splits, load_splits
from neurodelay.errors import RunError
from neurodelay.options import check_model_memory
from neurodelay.runs import (
    RunLock,
    load_checkpoint,
    new_run,
    open_run,
    remove_stale_temp_files,
    require_keys,
)
from neurodelay.train.loaders import load_model
from neurodelay.train.model import (
    DelaySNN,
    ModelConfig,
    loss_fn,
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


# --------------------------------------------------------------------------- utils
def atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


atomic_write_text = atomic_write


def check_training_memory(mc: ModelConfig, tc: TrainConfig, splits: Splits) -> None:
    """ResourceLimitError (before anything is allocated or written) when training ``mc``
    on ``splits`` would exceed the memory limit of :mod:`neurodelay.options`: a training
    batch as long as the longest training sample, and an evaluation batch of the
    validation/test sets padded to their longest sample."""

    learned = mc.delays == "learned"
    check_model_memory(mc.n_inputs, mc.hidden, mc.n_outputs, mc.window,
                       min(tc.batch_size, len(splits.train)), splits.train.max_steps,
                       training=True, learned=learned, what="training the model")
    evals = [d for d in (splits.valid, splits.test) if d is not None]
    check_model_memory(mc.n_inputs, mc.hidden, mc.n_outputs, mc.window,
                       min(tc.eval_batch_size, max(len(d) for d in evals)),
                       max(d.max_steps for d in evals), training=False, learned=learned,
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
    pad_to = ds.max_steps if pad_to is None else pad_to
    preds, scores = [], []
    for x, _ in D.iterate_batches(ds, batch_size, shuffle=False, pad_to=pad_to):
        sc = scores_from_membrane(model(x, discrete=True))
        scores.append(sc)
        preds.append(sc.argmax(1))
    model.train(was)
    return torch.cat(preds).numpy(), torch.cat(scores).numpy()


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


def _rng_state():
    """The RNG states as tensors and plain numbers (what the safe checkpoint loader
    reads; no numpy objects in the file)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": str(name), "key": torch.from_numpy(key.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(gauss)}}


def _set_rng_state(st):
    """Restore :func:`_rng_state` (also the numpy tuple that checkpoints written before
    it hold)."""
    torch.set_rng_state(st["torch"])
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


def distributed_context():
    """(rank, world_size) under torchrun (initialises the process group), else (0, 1).

    Backend: nccl when CUDA is available, gloo on CPU. Each rank trains on its share
    rank::world of every global batch of ``batch_size`` samples; DDP averages gradients,
    so the parameters stay identical on every rank.
    """

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _all_sum(values: list[float], world: int) -> list[float]:
    if world <= 1:
        return values

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def flush_denormal_enabled() -> bool:
    """Whether torch flushes subnormal floats to zero now (torch has no getter: a
    subnormal input multiplied by 1 reads as 0 when the CPU treats denormals as zero)."""
    return float(torch.tensor([1e-39], dtype=torch.float32).mul(1.0)[0]) == 0.0


def train(run_dir: str | Path, mc: ModelConfig, tc: TrainConfig, dc: DataConfig, *,
          resume: bool = False, overwrite: bool = False, progress: bool = True,
          stop_after_epoch: int | None = None, log=_log) -> dict:
    """Train (or resume) a run; returns the final result dict.

    The run folder is locked while training (a second process fails at once, naming this
    one), must be empty or new unless ``resume`` (continue its checkpoint) or
    ``overwrite`` (replace its run files), and temporary files of interrupted writes are
    removed. Global state is left as found: torch's RNG, numpy's global RNG and the
    flush-denormal mode are restored when the call returns or fails.
    ``stop_after_epoch`` ends the call after that many epochs (used to test resume).
    """


    run = Path(run_dir)
    rank, world = distributed_context()
    torch_rng, np_rng = torch.get_rng_state(), np.random.get_state()
    ftz = flush_denormal_enabled()
    with ExitStack() as stack:
        if rank == 0:
            stack.enter_context(RunLock(run, "train"))
            if not resume:
                removed = stack.enter_context(new_run(run, overwrite=overwrite))
                if removed:
                    log(f"--overwrite: replacing {', '.join(sorted(p.name for p in removed))} "
                        f"in {run} (the old files are removed once the new run has its "
                        f"first checkpoint)")
            remove_stale_temp_files(run)
        try:
            return _train(run, mc, tc, dc, rank=rank, world=world, resume=resume,
                          progress=progress, stop_after_epoch=stop_after_epoch, log=log)
        finally:
            torch.set_flush_denormal(ftz)
            torch.set_rng_state(torch_rng)
            np.random.set_state(np_rng)


def _train(run: Path, mc, tc, dc, *, rank: int, world: int, resume: bool, progress: bool,
           stop_after_epoch, log) -> dict:

    ckpt_path = run / "checkpoint.pt"
    main_rank = rank == 0
    if not main_rank:
        log = lambda *a, **k: None  # noqa: E731
        progress = False
    if resume:
        if not ckpt_path.exists():
            raise RunError(f"{ckpt_path}: nothing to resume (no checkpoint in {run}); start "
                           f"a new run without --resume")
        saved = open_run(run, kinds=("trained",)).config
        mc = ModelConfig(**saved["model"])
        tc = TrainConfig(**saved["train"])
        dc = DataConfig(**saved["data"])

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
    model = DelaySNN(mc, seed=tc.seed)
    opt_w, sched_w, opt_p, sched_p = build_optim(model, tc)
    counts = model.count_parameters()
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model)
        if tc.batch_size % world:
            from neurodelay.errors import OptionError
            raise OptionError(f"--batch-size {tc.batch_size}: not divisible by the "
                              f"{world} processes; every process takes an equal share of "
                              f"a batch")
        log(f"distributed: {world} processes, {tc.batch_size // world} samples each per "
            f"global batch of {tc.batch_size}; BatchNorm statistics are per process")

    state = {"epoch": 0, "metrics": [], "best_valid": -1.0, "best_epoch": -1}
    if resume:
        ck = load_checkpoint(ckpt_path, "training checkpoint")
        require_keys(ck, ("model", "opt_w", "sched_w", "rng", "state"), str(ckpt_path))
        model.load_state_dict(ck["model"])
        opt_w.load_state_dict(ck["opt_w"])
        sched_w.load_state_dict(ck["sched_w"])
        if opt_p is not None:
            opt_p.load_state_dict(ck["opt_p"])
            sched_p.load_state_dict(ck["sched_p"])
        _set_rng_state(ck["rng"])
        state = ck["state"]
        log(f"resuming {run} after epoch {state['epoch']}/{tc.epochs}")
    elif main_rank:
        run.mkdir(parents=True, exist_ok=True)
        cfg = {"kind": "trained", "model": mc.to_dict(), "train": asdict(tc),
               "data": asdict(dc),
               "parameters": counts, "class_names": splits.train.class_names,
               "splits": {"train": len(splits.train), "valid": len(splits.valid),
                          "test": len(splits.test), "notes": splits.notes},
               "world_size": world}
        atomic_write_text(run / "config.json", json.dumps(cfg, indent=2))
        log(f"model: {mc.hidden} hidden, window {mc.window} steps, delays={mc.delays}, "
            f"parameters {counts['total']:,} (weights {counts['weights']:,}, "
            f"delays {counts['delays']:,})")
    if main_rank:
        from neurodelay.train import native

        st = native.status()
        if not st.available:        # integer delays (validation, fixed delays) run slower
            log(f"note: integer-delay operator on its {st.describe()}")
    if main_rank:
        atomic_write_text(run / "metrics.jsonl",
                          "".join(json.dumps(m) + "\n" for m in state["metrics"]))
    _barrier(world)


    n_train = len(splits.train)
    start = state["epoch"]
    for epoch in range(start, tc.epochs):
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
        t0 = time.time()
        sig = sigma_schedule(epoch, tc.epochs, mc.sigma0, tc.sigma)
        model.set_sigma(sig)
        model.train()
        tot_loss, tot_correct, tot_n = 0.0, 0, 0
        n_batches = (n_train + tc.batch_size - 1) // tc.batch_size
        bar = tqdm(D.iterate_batches(splits.train, tc.batch_size, shuffle=True, seed=tc.seed,
                                     epoch=epoch),
                   total=n_batches, desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False,
                   disable=not progress, unit="batch")
        for x, y in bar:
            if world > 1:
                if len(y) < world:  # a last partial batch too small to share: skipped
                    continue        # by every rank alike
                x, y = x[rank::world], y[rank::world]
            u = net(x, discrete=False, reference=tc.reference_kernels)
            loss = loss_fn(u, y)
            opt_w.zero_grad(set_to_none=True)
            if opt_p is not None:
                opt_p.zero_grad(set_to_none=True)
            loss.backward()
            opt_w.step()
            if opt_p is not None:
                opt_p.step()
            model.after_step()
            with torch.no_grad():
                correct = int((scores_from_membrane(u).argmax(1) == y).sum())
            tot_loss += loss.item() * len(y)
            tot_correct += correct
            tot_n += len(y)
            bar.set_postfix(loss=f"{tot_loss / tot_n:.3f}", acc=f"{tot_correct / tot_n:.3f}")
        bar.close()
        tot_loss, tot_correct, tot_n = _all_sum([tot_loss, tot_correct, tot_n], world)
        tot_correct, tot_n = int(tot_correct), int(tot_n)
        lrs = {"lr_weights": opt_w.param_groups[0]["lr"],
               "lr_positions": opt_p.param_groups[0]["lr"] if opt_p else 0.0}
        sched_w.step()
        if sched_p is not None:
            sched_p.step()
        valid_acc = accuracy(model, splits.valid, tc.eval_batch_size)
        rec = {"epoch": epoch + 1, "loss": tot_loss / tot_n, "train_acc": tot_correct / tot_n,
               "valid_acc": valid_acc,
               "sigma": sig + 0.27 if mc.delays == "learned" else None, **lrs,
               "seconds": round(time.time() - t0, 2)}
        state["metrics"].append(rec)
        state["epoch"] = epoch + 1
        if valid_acc > state["best_valid"]:
            state["best_valid"], state["best_epoch"] = valid_acc, epoch + 1
            if main_rank:
                atomic_torch_save({"model": model.state_dict(), "model_config": mc.to_dict(),
                                   "epoch": epoch + 1, "valid_acc": valid_acc}, run / "best.pt")
        ck = {"model": model.state_dict(), "opt_w": opt_w.state_dict(),
              "sched_w": sched_w.state_dict(), "rng": _rng_state(), "state": state}
        if opt_p is not None:
            ck["opt_p"], ck["sched_p"] = opt_p.state_dict(), sched_p.state_dict()
        if main_rank:
            atomic_torch_save(ck, ckpt_path)
            append_line(run / "metrics.jsonl", json.dumps(rec))
        _barrier(world)
        log(f"epoch {epoch + 1:3d}/{tc.epochs}  loss {rec['loss']:.4f}  train {rec['train_acc']:.3f}"
            f"  valid(discrete) {valid_acc:.3f}"
            + (f"  sigma {rec['sigma']:.2f}" if rec["sigma"] is not None else "")
            + f"  {rec['seconds']:.1f}s")

    if state["epoch"] < tc.epochs:
        return {"finished": False, "epoch": state["epoch"]}
    best = load_model(run)
    test_acc = accuracy(best, splits.test, tc.eval_batch_size)
    result = {"finished": True, "test_accuracy": test_acc, "n_test": len(splits.test),
              "best_epoch": state["best_epoch"], "best_valid_accuracy": state["best_valid"],
              "parameters": counts, "notes": splits.notes, "world_size": world}
    if main_rank:
        atomic_write_text(run / "result.json", json.dumps(result, indent=2))
    _barrier(world)
    return {**result, "rank": rank}
