"""Section ``epoch``: a whole shd-preset schedule as neurodelay.train.trainer runs it,
neurodelay (fastconv training, intdelay validation) against the paper's formulation (the
model's reference=True path under flush-to-zero, conv1d validation), epochs alternating;
per-epoch times, peak RSS, and the extrapolation to a full SHD run (also what
``bench.py --extrapolate FILE`` prints from a saved result)."""
from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import TRAIN_FULL, ftz, spec_shape
from bench_harness import ROOT, log, memory_probe

NAME = "epoch"
SSHD_TRAIN = ROOT.parent / "shared" / "data" / "sshd_train.h5"
EPOCH_VALID_SPEAKERS = (20, 21, 22, 23)

# A full paper-faithful SHD run: 150 epochs, SHD's 8,156 training samples, its 2,264-sample
# test set as validation after every epoch, ~100 steps per sample (dt 10 ms, 1 s).
SHD_FULL_RUN = {"epochs": 150, "train_samples": 8156, "valid_samples": 2264, "steps": 100}


def shd_extrapolation(ep: dict) -> dict:
    """The wall time of a full SHD run (SHD_FULL_RUN) for both variants of the epoch
    section's result ``ep``, scaled linearly in samples and steps from the measured mean
    epoch: training x (8,156 / n_train) x (100 / mean padded T), validation x
    (2,264 / n_valid) x (100 / validation T). An extrapolation, labelled as such."""
    f = SHD_FULL_RUN
    out = {"what": (f"extrapolated, not measured: {f['epochs']} epochs of {f['train_samples']:,} "
                    f"training samples and {f['valid_samples']:,} validation samples of "
                    f"{f['steps']} steps, scaled linearly in samples and steps from the "
                    f"measured mean epoch of the epoch section")}
    hours = {}
    for v in ("reference", "neurodelay"):
        r = ep[v]
        train = (r["mean_train_s"] * f["train_samples"] / ep["n_train"]
                 * f["steps"] / r["mean_padded_T"])
        valid = (r["mean_valid_s"] * f["valid_samples"] / ep["n_valid"]
                 * f["steps"] / ep["valid_T"])
        hours[v] = f["epochs"] * (train + valid) / 3600
        out[v] = {"train_s_per_epoch": round(train, 1), "valid_s_per_epoch": round(valid, 1),
                  "epoch_s": round(train + valid, 1), "run_h": round(hours[v], 2)}
    out["ratio"] = round(hours["reference"] / hours["neurodelay"], 2)
    return out


def _epoch_data(n_train: int, n_valid: int, path: Path):
    """(train batches(epoch, batch) -> iterator, validation batches list, description,
    n_train, n_valid).

    SSHD (sshd_train.h5, binned like the shd preset: 140 channels, 10 ms) when present:
    a fixed random subset of the training speakers and of speakers 20-23 for validation;
    batches padded like the trainer (training: to the batch's longest sample,
    validation: to the set's longest). Otherwise synthetic Poisson counts (mean 0.3)
    of the same shape, T = 100, 20 classes."""
    from neurodelay import data as D

    g = np.random.default_rng(0)
    if path.exists():
        ds = D.load_binned(str(path), channel_bin=5, dt=0.01, progress=False)
        held = np.isin(ds.speakers, EPOCH_VALID_SPEAKERS)
        tr_idx = g.permutation(np.flatnonzero(~held))[:n_train]
        va_idx = g.permutation(np.flatnonzero(held))[:n_valid]
        train, valid = ds.subset(np.sort(tr_idx)), ds.subset(np.sort(va_idx))
        desc = (f"{path.name}: {len(train)} training samples (speakers other than "
                f"{list(EPOCH_VALID_SPEAKERS)}), {len(valid)} validation samples (those "
                f"speakers)")

        def batches(epoch, batch):
            return D.iterate_batches(train, batch, shuffle=True, seed=0, epoch=epoch)

        vb = list(D.iterate_batches(valid, 256, shuffle=False, pad_to=valid.max_steps))
        return batches, vb, desc, len(train), len(valid)
    T = 100
    xs = torch.poisson(torch.full((n_train + n_valid, T, 140), 0.3),
                       generator=torch.Generator().manual_seed(0))
    ys = torch.from_numpy(g.integers(0, 20, n_train + n_valid))

    def batches(epoch, batch):
        order = torch.from_numpy(np.random.default_rng(epoch).permutation(n_train))
        for a in range(0, n_train, batch):
            idx = order[a:a + batch]
            yield xs[idx], ys[idx]

    vb = [(xs[n_train + a:n_train + a + 256], ys[n_train + a:n_train + a + 256])
          for a in range(0, n_valid, 256)]
    return batches, vb, (f"synthetic Poisson counts ({path} absent): {n_train} training, "
                         f"{n_valid} validation samples of {T} steps"), n_train, n_valid


class _Variant:
    """One side of the comparison: its model copy, the trainer's optimizers and
    schedulers (build_optim), and its per-epoch records."""

    def __init__(self, name: str, ref: bool, base, tc):
        from neurodelay.train.trainer import build_optim

        self.name, self.ref = name, ref
        self.model = copy.deepcopy(base)
        self.opt_w, self.sched_w, self.opt_p, self.sched_p = build_optim(self.model, tc)
        self.epochs = []


def _build(p: dict, epochs: int, batch: int):
    """The shd preset's model (seed 0), its ModelConfig and the TrainConfig of this
    schedule."""
    from neurodelay.train.model import DelaySNN, ModelConfig
    from neurodelay.train.trainer import TrainConfig

    mc = ModelConfig(n_inputs=140, n_outputs=20, hidden=list(p["hidden"]),
                     max_delay_steps=int(round(p["max_delay_ms"] / p["dt_ms"])),
                     tau=p["tau_ms"] / p["dt_ms"], dropout=p["dropout"])
    torch.manual_seed(0)
    return DelaySNN(mc, seed=0), mc, TrainConfig(epochs=epochs, batch_size=batch)


def run(args) -> dict:
    """A whole shd-preset schedule (sigma Td/2 -> 0.5 over the first quarter, OneCycle /
    cosine per epoch, discrete validation after every epoch), mirroring
    neurodelay.train.trainer: neurodelay (fastconv training, intdelay validation) vs the
    paper's formulation (dcls + spikingjelly training under flush-to-zero as the trainer's
    --reference-kernels does, conv1d validation: the model's reference=True path).
    Epochs alternate between the variants (A B, B A, ...)."""
    from neurodelay.train.model import sigma_schedule
    from neurodelay.train.presets import preset

    p = preset("shd")
    epochs = args.epoch_epochs or (2 if args.quick else 4)
    n_train, n_valid = (128, 64) if args.quick else (1024, 256)
    if args.epoch_samples:
        n_train = args.epoch_samples
    batch = 64 if args.quick else p["batch_size"]
    batches, vbatches, desc, n_train, n_valid = _epoch_data(n_train, n_valid, SSHD_TRAIN)
    base, mc, tc = _build(p, epochs, batch)
    shape = spec_shape({"n_inputs": 140, "hidden": p["hidden"], "n_outputs": 20})
    log(f"\n[epoch] shd preset {shape}, Td={mc.window}, batch {batch}, {epochs} epochs; "
        f"data: {desc}")
    variants = [_Variant("reference", True, base, tc), _Variant("neurodelay", False, base, tc)]
    torch.set_flush_denormal(False)
    for e in range(epochs):
        sig = sigma_schedule(e, epochs, mc.sigma0)
        for v in (variants if e % 2 == 0 else variants[::-1]):
            _epoch(v, e, epochs, sig, (batches, batch), vbatches, n_valid)
    torch.set_flush_denormal(False)
    res = {"data": desc, "n_train": n_train, "n_valid": n_valid, "epochs": epochs,
           "batch": batch, "valid_T": int(vbatches[0][0].shape[1]) if vbatches else None}
    _results(res, variants)
    if not args.no_memory:
        mspec = {**TRAIN_FULL["shd_b256"], "batch": batch}
        res["peak_rss_mb"] = {v: memory_probe(mspec, "epoch_" + v, args.threads)
                              for v in ("reference", "neurodelay")}
        log("  peak RSS (2 steps + 1 validation batch, own process): " + ", ".join(
            f"{k} {m['peak_mb']:.0f} MB" for k, m in res["peak_rss_mb"].items()))
    return res


def _epoch(v: _Variant, e: int, epochs: int, sig: float, train, vbatches,
           n_valid: int) -> None:
    """One epoch of variant ``v`` (training on the batches of ``train`` = (batches,
    batch size), scheduler step, discrete validation), timed, appended to ``v.epochs``
    and logged."""
    from neurodelay.train.model import loss_fn, scores_from_membrane

    batches, batch = train
    m = v.model
    m.set_sigma(sig)
    m.train()
    torch.manual_seed(1000 + e)                   # same dropout masks in both
    steps, t_steps = 0, []
    with ftz(v.ref):
        t0 = time.perf_counter()
        for x, y in batches(e, batch):
            loss = loss_fn(m(x, discrete=False, reference=v.ref), y)
            v.opt_w.zero_grad(set_to_none=True)
            if v.opt_p is not None:
                v.opt_p.zero_grad(set_to_none=True)
            loss.backward()
            v.opt_w.step()
            if v.opt_p is not None:
                v.opt_p.step()
            m.after_step()
            steps += 1
            t_steps.append(int(x.shape[1]))
        t_train = time.perf_counter() - t0
        v.sched_w.step()
        if v.sched_p is not None:
            v.sched_p.step()
        m.eval()
        t0 = time.perf_counter()
        correct = 0
        with torch.no_grad():
            for x, y in vbatches:
                u = m(x, discrete=True, reference=v.ref)
                correct += int((scores_from_membrane(u).argmax(1) == y).sum())
        t_valid = time.perf_counter() - t0
    v.epochs.append({"epoch": e + 1, "sigma": sig + 0.27, "train_s": t_train,
                     "valid_s": t_valid, "total_s": t_train + t_valid,
                     "steps": steps, "mean_padded_T": float(np.mean(t_steps)),
                     "valid_acc": correct / n_valid, "last_loss": loss.item()})
    log(f"  epoch {e + 1}/{epochs} {v.name:10s} sigma {sig + 0.27:5.2f}: train "
        f"{t_train:7.2f} s ({steps} steps), validation {t_valid:6.2f} s, valid acc "
        f"{correct / n_valid:.3f}")


def _results(res: dict, variants: list) -> None:
    """Per-variant totals and means, the speed-ups and the full-run extrapolation."""
    for v in variants:
        ep = v.epochs
        res[v.name] = {"per_epoch": ep, "total_s": sum(r["total_s"] for r in ep),
                       "mean_epoch_s": statistics.mean(r["total_s"] for r in ep),
                       "mean_train_s": statistics.mean(r["train_s"] for r in ep),
                       "mean_valid_s": statistics.mean(r["valid_s"] for r in ep),
                       "mean_padded_T": statistics.mean(r["mean_padded_T"] for r in ep)}
    res["speedup"] = res["reference"]["total_s"] / res["neurodelay"]["total_s"]
    res["train_speedup"] = (res["reference"]["mean_train_s"]
                            / res["neurodelay"]["mean_train_s"])
    res["valid_speedup"] = (res["reference"]["mean_valid_s"]
                            / max(res["neurodelay"]["mean_valid_s"], 1e-9))
    log(f"  whole schedule: reference {res['reference']['total_s']:.1f} s, neurodelay "
        f"{res['neurodelay']['total_s']:.1f} s -> {res['speedup']:.2f}x (training "
        f"{res['train_speedup']:.2f}x, validation {res['valid_speedup']:.2f}x)")
    if res["valid_T"]:
        res["full_shd_run_extrapolated"] = x = shd_extrapolation(res)
        log(f"  full SHD run ({x['what']}): neurodelay {x['neurodelay']['run_h']:.1f} h, "
            f"paper {x['reference']['run_h']:.1f} h")


def record(out: dict, ep: dict) -> None:
    out["epoch"] = ep
    out["epoch_speedup"] = ep["speedup"]


def summary(out: dict, args) -> list[str]:
    return [f"epoch_speedup (whole schedule incl. validation): {out['epoch_speedup']:.2f}x"]
