"""Notebook-level API: every CLI command is a thin wrapper over one function here."""
from __future__ import annotations

from pathlib import Path

from neurodelay import data as D
from neurodelay.train.model import ModelConfig, widen_for_parameter_parity
from neurodelay.train.presets import preset as get_preset
from neurodelay.train.trainer import DataConfig, TrainConfig, accuracy, run_config, train


def _steps(ms: float, dt_ms: float) -> int:
    return max(1, int(round(ms / dt_ms)))


def resolve_data(*, dataset=None, data_dir=None, train_file=None, valid_file=None,
                 test_file=None, valid_speakers=None, test_speakers=None, dt_ms=10.0,
                 channel_bin=5, max_time=None, cache_dir=None) -> DataConfig:
    """A DataConfig from CLI-style options; no data options -> the embedded task."""
    embedded = not (dataset or data_dir or train_file)
    if embedded:
        files = D.make_synthetic(D.synthetic_dir(cache_dir))
        files = {k: str(v) for k, v in files.items()}
    else:
        found = D.resolve_files(dataset, data_dir, train_file, valid_file, test_file)
        files = {k: (str(v) if v else None) for k, v in found.items()}
    return DataConfig(train=files["train"], valid=files.get("valid"), test=files.get("test"),
                      valid_speakers=list(valid_speakers) if valid_speakers else None,
                      test_speakers=list(test_speakers) if test_speakers else None,
                      dt=dt_ms / 1000.0, channel_bin=channel_bin, max_time=max_time,
                      cache_dir=cache_dir, embedded=embedded)


def resolve_preset_name(preset: str | None, dataset: str | None, embedded: bool) -> str:
    if preset:
        return preset
    if embedded:
        return "tiny"
    return "ssc" if dataset == "ssc" else "shd"


def make_configs(dc: DataConfig, *, preset=None, dataset=None, n_classes: int, hidden=None,
                 max_delay_ms=None, tau_ms=None, dropout=None, threshold=None, epochs=None,
                 batch_size=None, delays="learned", sigma="decreasing",
                 learn="weights+delays", connections=None, seed=0, lr=1e-3, max_lr=5e-3,
                 position_lr_factor=100.0, reference_kernels=False, log=print):
    """(ModelConfig, TrainConfig) from a preset overridden by explicit options."""
    name = resolve_preset_name(preset, dataset, dc.embedded)
    p = get_preset(name)
    dt_ms = dc.dt * 1000.0
    if abs(dt_ms - p["dt_ms"]) > 1e-9:
        log(f"note: dt {dt_ms} ms differs from preset {name}'s {p['dt_ms']} ms; "
            f"times in ms are converted with dt {dt_ms} ms")
    mc = ModelConfig(
        n_inputs=dc.n_channels // dc.channel_bin, n_outputs=n_classes,
        hidden=list(hidden) if hidden else p["hidden"],
        max_delay_steps=_steps(max_delay_ms if max_delay_ms is not None else p["max_delay_ms"],
                               dt_ms),
        tau=(tau_ms if tau_ms is not None else p["tau_ms"]) / dt_ms,
        threshold=threshold if threshold is not None else p["threshold"],
        dropout=dropout if dropout is not None else p["dropout"],
        delays=delays, connections=connections)
    if delays == "none":
        ref = ModelConfig(**{**mc.to_dict(), "delays": "learned"})
        wide = widen_for_parameter_parity(mc, ref)
        from neurodelay.train.model import count_parameters
        log(f"--delays none: hidden layers widened {mc.hidden} -> {wide} so the parameter "
            f"count matches ({count_parameters(ref):,} with learned delays vs "
            f"{count_parameters(ModelConfig(**{**mc.to_dict(), 'hidden': wide})):,})")
        mc = ModelConfig(**{**mc.to_dict(), "hidden": wide})
    tc = TrainConfig(epochs=epochs or p["epochs"], batch_size=batch_size or p["batch_size"],
                     lr=lr, max_lr=max_lr, position_lr_factor=position_lr_factor, sigma=sigma,
                     learn=learn, seed=seed, reference_kernels=reference_kernels)
    return mc, tc


class torch_threads:
    """Context manager: torch uses ``n`` CPU threads inside, the previous count after
    (None: leave it alone). Library calls must leave global state as they found it."""

    def __init__(self, n: int | None):
        self.n, self.before = n, None

    def __enter__(self):
        if self.n is not None:
            import torch

            self.before = torch.get_num_threads()
            torch.set_num_threads(int(self.n))
        return self

    def __exit__(self, *exc):
        if self.before is not None:
            import torch

            torch.set_num_threads(self.before)


def train_run(out, *, resume=False, overwrite=False, progress=True, threads=None, log=print,
              **options) -> dict:
    """Train a run into ``out`` (see ``neurodelay train --help`` for the options).

    ``threads`` sets torch's CPU thread count for this call only (restored after).
    """
    with torch_threads(threads):
        return _train_run(out, resume=resume, overwrite=overwrite, progress=progress,
                          log=log, **options)


def _train_run(out, *, resume, overwrite, progress, log, **options) -> dict:
    if resume:
        return train(out, None, None, None, resume=True, progress=progress, log=log)
    data_keys = ("dataset", "data_dir", "train_file", "valid_file", "test_file",
                 "valid_speakers", "test_speakers", "dt_ms", "channel_bin", "max_time",
                 "cache_dir")
    dc = resolve_data(**{k: options.pop(k) for k in data_keys if k in options})
    mc, tc = make_configs(dc, n_classes=_class_count(dc), log=log, **options)
    if dc.embedded:
        log(f"data: embedded synthetic timing task ({Path(dc.train).parent})")
    return train(out, mc, tc, dc, overwrite=overwrite, progress=progress, log=log)


def _class_count(dc: DataConfig) -> int:
    """Number of classes of the training file, read through the validating (cached) loader."""
    return D.load_binned(dc.train, channel_bin=dc.channel_bin, dt=dc.dt, max_time=dc.max_time,
                         n_channels=dc.n_channels, cache_dir=dc.cache_dir,
                         progress=False).n_classes


def evaluate_run(run, test_file=None, batch_size=256) -> dict:
    """Discrete-model test accuracy of a run (``finished`` False for an interrupted run:
    then best.pt is the best epoch so far, and ``status`` says how far it got)."""
    from neurodelay.runs import open_run

    r = open_run(run, kinds=("trained",))
    status = r.status()
    model = r.load_model()
    ds = r.test_data(test_file)
    acc = accuracy(model, ds, batch_size)
    return {"accuracy": acc, "n": len(ds), "run": str(run),
            "test": test_file or "run's own test split", "finished": status.finished,
            "status": status.describe()}


__all__ = ["train_run", "evaluate_run", "resolve_data", "make_configs", "run_config"]
