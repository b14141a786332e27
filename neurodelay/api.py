"""Notebook-level API: every CLI command is a thin wrapper over one function here."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from neurodelay import data as D
from neurodelay import options as O
from neurodelay.data import DataConfig, load_splits, pad_batch
from neurodelay.data.rundata import run_test_data
from neurodelay.devices import precision, resolve_device
from neurodelay.errors import OptionError
from neurodelay.runs import open_run
from neurodelay.sim import bitsim, floatsim
from neurodelay.threads import torch_threads
from neurodelay.train.augment import canonical as augment_canonical
from neurodelay.train.loaders import float_network, load_model
from neurodelay.train.model import (
    ModelConfig,
    count_parameters,
    narrow_for_parameter_parity,
    widen_for_parameter_parity,
)
from neurodelay.train.presets import PRESETS
from neurodelay.train.presets import preset as get_preset
from neurodelay.train.trainer import (
    TrainConfig,
    accuracy,
    check_training_memory,
    run_configs,
    train,
)

N_CHANNELS = 700            # cochlea channels of SHD/SSC (DataConfig.n_channels)
DATA_KEYS = ("dataset", "data_dir", "train_file", "valid_file", "test_file", "valid_speakers",
             "test_speakers", "dt_ms", "channel_bin", "max_time", "cache_dir")
MODEL_KEYS = ("preset", "hidden", "max_delay_ms", "tau_ms", "dropout", "threshold", "epochs",
              "batch_size", "delays", "sigma", "learn", "connections", "seed", "lr", "max_lr",
              "position_lr_factor", "reference_kernels", "augment", "recurrent",
              "recurrent_delays", "recurrent_max_delay_ms", "match_feedforward")
REC_DELAYS = ("learned", "fixed-random", "one-step")


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def check_data_options(*, dt_ms=10.0, channel_bin=5, max_time=None, valid_speakers=None,
                       test_speakers=None, n_channels=N_CHANNELS) -> None:
    """Validate the binning and split options (OptionError naming the option); no I/O."""
    O.check_float(dt_ms, "--dt", "the time bin", lo=0.0, lo_open=True, unit="ms")
    cb = O.check_int(channel_bin, "--channel-bin",
                     f"the number of cochlea channels summed into one input (of "
                     f"{n_channels})", lo=1, hi=n_channels)
    if n_channels % cb:
        raise OptionError(f"--channel-bin {cb}: out of range; it must divide the {n_channels} "
                          f"channels evenly (one of {', '.join(map(str, _divisors(n_channels)))})")
    if max_time is not None:
        O.check_float(max_time, "--max-time", "the time kept after each sample's first spike",
                      lo=0.0, lo_open=True, unit="s")
    for option, spk in (("--valid-speakers", valid_speakers), ("--test-speakers", test_speakers)):
        if spk is not None:
            O.check_int_list(spk, option, "every speaker id", lo=0, allow_empty=True)


def resolve_data(*, dataset=None, data_dir=None, train_file=None, valid_file=None,
                 test_file=None, valid_speakers=None, test_speakers=None, dt_ms=10.0,
                 channel_bin=5, max_time=None, cache_dir=None) -> DataConfig:
    """A DataConfig from CLI-style options; no data options -> the embedded task.

    Every value is checked first (:func:`check_data_options`): OptionError naming the option.
    """
    check_data_options(dt_ms=dt_ms, channel_bin=channel_bin, max_time=max_time,
                       valid_speakers=valid_speakers, test_speakers=test_speakers)
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
                      dt=float(dt_ms) / 1000.0, channel_bin=int(channel_bin),
                      max_time=None if max_time is None else float(max_time),
                      cache_dir=cache_dir, embedded=embedded)


def resolve_preset_name(preset: str | None, dataset: str | None, embedded: bool) -> str:
    if preset is not None:
        return O.check_choice(preset, "--preset", tuple(PRESETS))
    if embedded:
        return "tiny"
    return "ssc" if dataset == "ssc" else "shd"


def _recurrent_values(dt_ms: float, max_delay_ms: float, *, recurrent=False,
                      recurrent_delays=None, recurrent_max_delay_ms=None,
                      match_feedforward=False) -> dict:
    """The recurrent options checked (OptionError naming the option): whether the model
    is recurrent, its recurrent delay mode and window in steps (None: the feed-forward
    window)."""
    if recurrent not in (True, False, None) and not isinstance(recurrent, (int, np.integer)):
        raise OptionError(f"--recurrent {recurrent!r}: expected on or off (a flag)")
    recurrent = bool(recurrent)
    if not recurrent:
        for option, value in (("--recurrent-delays", recurrent_delays),
                              ("--recurrent-max-delay", recurrent_max_delay_ms)):
            if value is not None:
                raise OptionError(f"{option} {_shown(value)}: it sets the recurrent "
                                  f"synapses, and the model has none; add --recurrent for "
                                  f"a recurrent model, or omit {option}")
        if match_feedforward:
            raise OptionError("match_feedforward: only a recurrent model (--recurrent) is "
                              "narrowed to the feed-forward parameter count")
        return {"recurrent": False, "recurrent_delays": "learned",
                "recurrent_max_delay_steps": None}
    mode = O.check_choice("learned" if recurrent_delays is None else recurrent_delays,
                          "--recurrent-delays", REC_DELAYS)
    steps = None
    if recurrent_max_delay_ms is not None:
        if mode == "one-step":
            raise OptionError(f"--recurrent-max-delay {_shown(recurrent_max_delay_ms)} with "
                              f"--recurrent-delays one-step: one-step recurrent delays are "
                              f"all 1 step (no window); omit one of them")
        md = O.check_float(recurrent_max_delay_ms, "--recurrent-max-delay",
                           "the recurrent delay window", lo=0.0, lo_open=True, unit="ms",
                           hint="Recurrent delays are 1..window steps of --dt")
        steps = int(round(md / dt_ms))
        least = 2 if mode == "learned" else 1
        if steps < least:
            raise OptionError(
                f"--recurrent-max-delay {md:g} ms: out of range; with --dt {dt_ms:g} ms it "
                f"gives a window of {steps} step{'s' if steps != 1 else ''}, and "
                f"{mode} recurrent delays need at least {least} (delays 1..window). Use "
                f"--recurrent-max-delay {least * dt_ms:g} ms or more"
                + (", or --recurrent-delays one-step for all delays 1 step"
                   if mode == "learned" else ""))
    elif mode != "one-step" and int(round(max_delay_ms / dt_ms)) < 2:
        steps = 2      # feed-forward window 1 (--delays none, short --max-delay): 2 steps
    return {"recurrent": True, "recurrent_delays": mode, "recurrent_max_delay_steps": steps}


def _model_values(dt_ms: float, name: str, *, hidden=None, max_delay_ms=None, tau_ms=None,
                  dropout=None, threshold=None, delays="learned", connections=None,
                  recurrent=False, recurrent_delays=None, recurrent_max_delay_ms=None,
                  match_feedforward=False) -> dict:
    """The model options resolved against preset ``name`` and validated in ms (OptionError
    naming the option, the value, the range and where a preset value came from)."""
    p = get_preset(name)
    O.check_choice(delays, "--delays", ("learned", "fixed-random", "none"))

    def pick(value, key, option):
        if value is not None:
            return value, None
        return p[key], f"This is the value of preset {name!r}; pass {option} to set another"

    hid, src = pick(hidden, "hidden", "--hidden")
    hid = O.check_int_list(list(hid) if not isinstance(hid, (int, float)) else [hid],
                           "--hidden", "every hidden layer size", lo=1,
                           hint=src or "Give sizes like --hidden 64,64")
    md, src = pick(max_delay_ms, "max_delay_ms", "--max-delay")
    md = O.check_float(md, "--max-delay", "the delay window", lo=0.0, lo_open=True, unit="ms",
                       hint=src or "It must hold at least 2 time steps of --dt (use --delays "
                                   "none for a model without delays)")
    window = int(round(md / dt_ms))
    if delays != "none" and window < 2:
        raise OptionError(
            f"--max-delay {md:g} ms: out of range; with --dt {dt_ms:g} ms it gives a window of "
            f"{window} step{'s' if window != 1 else ''} (delays 0..{max(window - 1, 0)}), so "
            f"the model would have no delays. Use --max-delay {2 * dt_ms:g} ms or more (2+ "
            f"steps), or --delays none for a model without delays"
            + (f". {src}" if src else ""))
    tau, src = pick(tau_ms, "tau_ms", "--tau")
    tau = O.check_float(tau, "--tau", "the membrane time constant", lo=dt_ms, lo_open=True,
                        unit="ms", hint=(f"A LIF neuron needs tau longer than one time step "
                                         f"(--dt {dt_ms:g} ms)") + (f". {src}" if src else ""))
    thr, src = pick(threshold, "threshold", "--threshold")
    thr = O.check_float(thr, "--threshold", "the LIF firing threshold", lo=0.0, lo_open=True,
                        hint=src)
    drop, src = pick(dropout, "dropout", "--dropout")
    drop = O.check_float(drop, "--dropout", "the dropout probability", lo=0.0, hi=1.0,
                         hi_open=True, hint=src or "0 means no dropout")
    if connections is not None:
        connections = O.check_int(connections, "--connections",
                                  "the synapses per neuron of a sparse model", lo=1,
                                  hint="Omit it for a fully connected model")
    rec = _recurrent_values(dt_ms, md, recurrent=recurrent, recurrent_delays=recurrent_delays,
                            recurrent_max_delay_ms=recurrent_max_delay_ms,
                            match_feedforward=match_feedforward)
    return {"hidden": hid, "max_delay_ms": md, "window": max(1, window), "tau_ms": tau,
            "threshold": thr, "dropout": drop, "connections": connections, **rec}


def _train_config(name: str, *, epochs=None, batch_size=None, sigma="decreasing",
                  learn="weights+delays", seed=0, lr=1e-3, max_lr=5e-3,
                  position_lr_factor=100.0, reference_kernels=False,
                  augment=None) -> TrainConfig:
    p = get_preset(name)
    return TrainConfig(epochs=p["epochs"] if epochs is None else epochs,
                       batch_size=p["batch_size"] if batch_size is None else batch_size,
                       lr=lr, max_lr=max_lr, position_lr_factor=position_lr_factor,
                       sigma=sigma, learn=learn, seed=seed, reference_kernels=reference_kernels,
                       augment=augment or "")


def check_options(**options) -> None:
    """Validate every option of :func:`train_run` without touching a file (OptionError
    naming the option, the value and the allowed range). ``train_run`` calls it first;
    ``run_ablation`` before it writes anything."""
    unknown = sorted(set(options) - set(DATA_KEYS) - set(MODEL_KEYS) - {"dataset"})
    if unknown:
        raise OptionError(f"unknown option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)}; see `neurodelay train --help` (keyword "
                          f"names are the options with '-' -> '_', times in *_ms)")
    data = {k: options[k] for k in ("dt_ms", "channel_bin", "max_time", "valid_speakers",
                                    "test_speakers") if k in options}
    check_data_options(**data)
    dataset = options.get("dataset")
    if dataset is not None:
        O.check_choice(dataset, "--dataset", ("shd", "ssc", "synthetic"))
    embedded = not (dataset or options.get("data_dir") or options.get("train_file"))
    name = resolve_preset_name(options.get("preset"), dataset, embedded)
    dt_ms = float(options.get("dt_ms", 10.0))
    _model_values(dt_ms, name, **{k: options[k] for k in
                                  ("hidden", "max_delay_ms", "tau_ms", "dropout", "threshold",
                                   "delays", "connections", "recurrent", "recurrent_delays",
                                   "recurrent_max_delay_ms", "match_feedforward")
                                  if k in options})
    _train_config(name, **{k: options[k] for k in
                           ("epochs", "batch_size", "sigma", "learn", "seed", "lr", "max_lr",
                            "position_lr_factor", "reference_kernels") if k in options})


def make_configs(dc: DataConfig, *, preset=None, dataset=None, n_classes: int, hidden=None,
                 max_delay_ms=None, tau_ms=None, dropout=None, threshold=None, epochs=None,
                 batch_size=None, delays="learned", sigma="decreasing",
                 learn="weights+delays", connections=None, seed=0, lr=1e-3, max_lr=5e-3,
                 position_lr_factor=100.0, reference_kernels=False, augment=None,
                 recurrent=False, recurrent_delays=None, recurrent_max_delay_ms=None,
                 match_feedforward=False, log=print):
    """(ModelConfig, TrainConfig) from a preset overridden by explicit options.

    ``None`` means "the preset's value"; every value (explicit or the preset's) is
    validated: OptionError naming the option, the value and the allowed range.
    ``match_feedforward`` (recurrent models; what ``ablate --recurrent`` uses): the hidden
    layers are narrowed so that the parameter count is closest to the same model without
    recurrent synapses (both counts are logged).
    """
    name = resolve_preset_name(preset, dataset, dc.embedded)
    p = get_preset(name)
    dt_ms = dc.dt * 1000.0
    v = _model_values(dt_ms, name, hidden=hidden, max_delay_ms=max_delay_ms, tau_ms=tau_ms,
                      dropout=dropout, threshold=threshold, delays=delays,
                      connections=connections, recurrent=recurrent,
                      recurrent_delays=recurrent_delays,
                      recurrent_max_delay_ms=recurrent_max_delay_ms,
                      match_feedforward=match_feedforward)
    tc = _train_config(name, epochs=epochs, batch_size=batch_size, sigma=sigma, learn=learn,
                       seed=seed, lr=lr, max_lr=max_lr, position_lr_factor=position_lr_factor,
                       reference_kernels=reference_kernels, augment=augment)
    if abs(dt_ms - p["dt_ms"]) > 1e-9:
        log(f"note: dt {dt_ms} ms differs from preset {name}'s {p['dt_ms']} ms; "
            f"times in ms are converted with dt {dt_ms} ms")
    mc = ModelConfig(
        n_inputs=dc.n_channels // dc.channel_bin, n_outputs=n_classes, hidden=v["hidden"],
        max_delay_steps=v["window"], tau=v["tau_ms"] / dt_ms, threshold=v["threshold"],
        dropout=v["dropout"], delays=delays, connections=v["connections"],
        recurrent=v["recurrent"], recurrent_delays=v["recurrent_delays"],
        recurrent_max_delay_steps=v["recurrent_max_delay_steps"])
    if match_feedforward:
        ref = ModelConfig(**{**mc.to_dict(), "recurrent": False})
        narrow = narrow_for_parameter_parity(mc, ref)
        log(f"--recurrent (delays {mc.recurrent_delays}): hidden layers narrowed "
            f"{mc.hidden} -> {narrow} so the parameter count matches the feed-forward "
            f"model's ({count_parameters(ref):,} feed-forward vs "
            f"{count_parameters(ModelConfig(**{**mc.to_dict(), 'hidden': narrow})):,})")
        mc = ModelConfig(**{**mc.to_dict(), "hidden": narrow})
    if delays == "none":
        ref = ModelConfig(**{**mc.to_dict(), "delays": "learned"})
        wide = widen_for_parameter_parity(mc, ref)
        log(f"--delays none: hidden layers widened {mc.hidden} -> {wide} so the parameter "
            f"count matches ({count_parameters(ref):,} with learned delays vs "
            f"{count_parameters(ModelConfig(**{**mc.to_dict(), 'hidden': wide})):,})")
        mc = ModelConfig(**{**mc.to_dict(), "hidden": wide})
    return mc, tc


def _cli_name(key: str) -> str:
    return {"dt_ms": "--dt", "tau_ms": "--tau", "max_delay_ms": "--max-delay",
            "recurrent_max_delay_ms": "--recurrent-max-delay"}.get(
        key, "--" + key.replace("_", "-"))


def _shown(value) -> str:
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(_shown(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _same_float(a, b) -> bool:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return False
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _same_path(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    pa, pb = (os.path.abspath(os.path.expanduser(os.fspath(p))) for p in (a, b))
    if pa == pb:
        return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:
        return False


def _int_items(value):
    """A list of ints from an int or a sequence, or None when it is not one."""
    try:
        items = [value] if isinstance(value, (int, float, np.integer)) else list(value)
        out = [int(v) for v in items]
        return out if all(o == v for o, v in zip(out, items)) else None
    except (TypeError, ValueError):
        return None


def check_resume_options(out, **options) -> None:
    """Refuse options given with ``resume`` that differ from the run's config.json.

    ``--resume`` continues a run exactly as it was configured (the same result as an
    uninterrupted run); an option that would change it was silently ignored before. Every
    option given (not ``None``; the CLI passes only those on its command line) is compared
    with the recorded setting in the option's own units; a value equal to the recorded one
    is accepted, a different one is an OptionError naming each option with the run's value
    and the given one. ``--preset`` stands for its values of the options not given. No
    config.json in ``out``: nothing to compare (the trainer says there is nothing to
    resume)."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(DATA_KEYS) - set(MODEL_KEYS))
    if unknown:
        raise OptionError(f"unknown option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)}; see `neurodelay train --help` (keyword "
                          f"names are the options with '-' -> '_', times in *_ms)")
    if not given or not (Path(out) / "config.json").exists():
        return
    mc, tc, dc = run_configs(out)
    tc = asdict(tc)
    wanted, origin = dict(given), {k: "" for k in given}
    if "preset" in given:
        name = O.check_choice(wanted.pop("preset"), "--preset", tuple(PRESETS))
        for key, value in get_preset(name).items():
            if key in MODEL_KEYS and key not in wanted:
                wanted[key], origin[key] = value, f" (from --preset {name})"
    compare = _recorded_settings(mc, tc, dc)
    diffs = []
    for key, value in wanted.items():
        if key in compare:
            shown, same = compare[key](value)
            if not same:
                diffs.append(f"{_cli_name(key)} {_shown(value)}{origin[key]} (the run has "
                             f"{_shown(shown)})")
    diffs += _file_diffs(given, dc)
    if diffs:
        many = len(diffs) > 1
        raise OptionError(
            f"--resume continues the run in {out} exactly as configured in its config.json "
            f"(the same result as an uninterrupted run), so options that would change it "
            f"are refused; {'these differ' if many else 'this one differs'} from the run's: "
            f"{'; '.join(diffs)}. Omit {'them' if many else 'it'} to resume the run, or "
            f"train a new run (another --out, or --overwrite to replace this one) to use "
            f"{'them' if many else 'it'}")


def _recorded_settings(mc: ModelConfig, tc: dict, dc: DataConfig) -> dict:
    """option -> (given value -> (the run's setting as shown, equal?)), in the option's
    own units (ms for times; the widened sizes of a --delays none run)."""
    dt_ms = dc.dt * 1000.0

    def number(rec, shown=None):
        return lambda v: (rec if shown is None else shown, _same_float(v, rec))

    def window(v):
        try:
            w = max(1, int(round(float(v) / dt_ms)))
        except (TypeError, ValueError, OverflowError):
            w = None
        return (f"{mc.max_delay_steps * dt_ms:g} ms (a window of {mc.max_delay_steps} steps "
                f"of {dt_ms:g} ms)", w == mc.max_delay_steps)

    def hidden(v):
        hid = _int_items(v)
        if hid and mc.delays == "none" and min(hid) >= 1:   # recorded: widened sizes
            base = ModelConfig(**{**mc.to_dict(), "hidden": hid})
            hid = widen_for_parameter_parity(
                base, ModelConfig(**{**base.to_dict(), "delays": "learned"}))
        shown = mc.hidden if mc.delays != "none" else \
            f"{_shown(mc.hidden)} (widened for --delays none)"
        return shown, hid == mc.hidden

    def speakers(key):
        rec = getattr(dc, key)
        return lambda v: (rec, _int_items(v) is not None
                          and sorted(set(_int_items(v))) == sorted(set(rec or [])))

    def rec_window(v):
        try:
            w = max(1, int(round(float(v) / dt_ms)))
        except (TypeError, ValueError, OverflowError):
            w = None
        if not mc.recurrent:
            return "no recurrent synapses", False
        return (f"{mc.rec_window * dt_ms:g} ms (a recurrent window of {mc.rec_window} steps "
                f"of {dt_ms:g} ms)", w == mc.rec_window)

    out = {k: number(tc[k]) for k in ("epochs", "batch_size", "seed", "lr", "max_lr",
                                       "position_lr_factor")}
    out.update({
        "recurrent": lambda v: (mc.recurrent, bool(v) == mc.recurrent),
        "recurrent_delays": lambda v: (mc.recurrent_delays if mc.recurrent
                                       else "no recurrent synapses",
                                       mc.recurrent and v == mc.recurrent_delays),
        "recurrent_max_delay_ms": rec_window,
    })
    out.update({k: (lambda v, k=k: (tc[k], v == tc[k])) for k in ("sigma", "learn")})
    out.update({
        "reference_kernels": lambda v: (tc["reference_kernels"],
                                        bool(v) == tc["reference_kernels"]),
        "augment": lambda v: (tc.get("augment") or "none",
                              augment_canonical(v) == (tc.get("augment") or "")),
        "delays": lambda v: (mc.delays, v == mc.delays),
        "threshold": number(mc.threshold), "dropout": number(mc.dropout),
        "connections": lambda v: (mc.connections, mc.connections is not None
                                  and _same_float(v, mc.connections)),
        "tau_ms": number(mc.tau * dt_ms, f"{mc.tau * dt_ms:g} ms"),
        "max_delay_ms": window, "hidden": hidden,
        "dt_ms": number(dt_ms, f"{dt_ms:g} ms"), "channel_bin": number(dc.channel_bin),
        "max_time": lambda v: ("no --max-time (all spikes kept)" if dc.max_time is None
                               else f"{dc.max_time:g} s", dc.max_time is not None
                               and _same_float(v, dc.max_time)),
        "valid_speakers": speakers("valid_speakers"),
        "test_speakers": speakers("test_speakers"),
        "cache_dir": lambda v: (dc.cache_dir, _same_path(v, dc.cache_dir)),
    })
    return out


def _file_diffs(given: dict, dc: DataConfig) -> list[str]:
    """The data files the given options name that are not the run's."""
    files = {s: given.get(f"{s}_file") for s in ("train", "valid", "test")}
    recorded = {"train": dc.train, "valid": dc.valid, "test": dc.test}
    if given.get("dataset") is None and given.get("data_dir") is None:
        return [f"--{s}-file {path} (the run has {recorded[s] or 'none'})"
                for s, path in files.items()
                if path is not None and not _same_path(path, recorded[s])]
    names = " ".join(f"{_cli_name(k)} {given[k]}" for k in
                     ("dataset", "data_dir", "train_file", "valid_file", "test_file")
                     if k in given)
    try:
        found = D.resolve_files(given.get("dataset"), given.get("data_dir"),
                                files["train"], files["valid"], files["test"])
    except D.DataError as e:
        return [f"{names} ({e}; the run's train file is {dc.train})"]
    bad = [f"{s} file {found[s] or 'none'} (the run has {recorded[s] or 'none'})"
           for s in ("train", "valid", "test") if not _same_path(found[s], recorded[s])]
    return [f"{names}: " + ", ".join(bad)] if bad else []


def train_run(out, *, resume=False, overwrite=False, progress=True, threads=None, log=print,
              device="auto", tf32=False, **options) -> dict:
    """Train a run into ``out`` (see ``neurodelay train --help`` for the options).

    Every option is validated before any file is read or written (:func:`check_options`:
    OptionError naming the option, value and range); the data is loaded and the memory
    the model will need is estimated before the run folder is touched
    (ResourceLimitError above ``NEURODELAY_MAX_GIB``, default 8 GiB).
    ``threads`` sets torch's CPU thread count for this call only (restored after).
    ``resume=True`` continues the run as its config.json says: an option given (not
    ``None``) that differs from it is an OptionError (:func:`check_resume_options`).
    ``device`` ("auto", "cpu", "cuda", "cuda:N") and ``tf32`` say where and how it runs,
    not what it computes (:mod:`neurodelay.devices`): like ``threads`` they are not
    settings of the run, so a run resumes on any device.

    Examples:
        Train one epoch of a small model on the embedded task (written to a folder of
        your choice), then read the result:

        >>> import tempfile
        >>> from neurodelay import api
        >>> from neurodelay.data import make_synthetic
        >>> tmp = tempfile.mkdtemp()
        >>> files = make_synthetic(tmp, sizes={"train": 64, "valid": 32, "test": 32})
        >>> res = api.train_run(f"{tmp}/run", preset="tiny", hidden=[8], epochs=1,
        ...                     train_file=str(files["train"]), test_file=str(files["test"]),
        ...                     cache_dir=tmp, threads=1, progress=False, log=lambda m: None)
        >>> res["finished"], res["n_test"]
        (True, 32)
        >>> 0.0 <= res["test_accuracy"] <= 1.0
        True
    """
    resolve_device(device)      # a CUDA device that is not there: before any data is read
    with torch_threads(threads):
        return _train_run(out, resume=resume, overwrite=overwrite, progress=progress,
                          log=log, device=device, tf32=tf32, **options)


def _train_run(out, *, resume, overwrite, progress, log, device="auto", tf32=False,
               **options) -> dict:
    if resume:
        if overwrite:
            raise OptionError(f"--resume with --overwrite: --resume continues the run in "
                              f"{out}, --overwrite replaces it; give one of them")
        check_resume_options(out, **options)
        return train(out, None, None, None, resume=True, progress=progress, log=log,
                     device=device, tf32=tf32)
    check_options(**options)
    data_opts = {k: options.pop(k) for k in DATA_KEYS if k in options}
    dc = resolve_data(**data_opts)
    splits = load_splits(dc, progress=progress)
    n_classes = splits.train.n_classes
    if n_classes < 2:
        raise D.DataError(f"{dc.train}: the training data has {n_classes} class"
                          f"{'es' if n_classes != 1 else ''}; a classifier needs at least 2")
    # the dataset picks the default preset (--dataset ssc -> the SSC recipe)
    mc, tc = make_configs(dc, dataset=data_opts.get("dataset"), n_classes=n_classes, log=log,
                          **options)
    check_training_memory(mc, tc, splits)
    if dc.embedded:
        log(f"data: embedded synthetic timing task ({Path(dc.train).parent})")
    return train(out, mc, tc, dc, overwrite=overwrite, progress=progress, log=log,
                 device=device, tf32=tf32)


@dataclass
class Evaluation:
    """What :func:`evaluate_run` measured."""

    accuracy: float
    n: int                    # test samples
    run: str
    test: str                 # the test file, or "run's own test split"
    finished: bool            # False: the run is interrupted (its best epoch so far)
    status: str               # RunStatus.describe()
    model: str                # which model computed it
    notes: list[str] = field(default_factory=list)   # e.g. classes renumbered by name
    device: str = "cpu"       # where the PyTorch model ran (trained runs)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_run(run, test_file=None, batch_size=256, device="auto") -> Evaluation:
    """Test accuracy of a run: a trained run's discrete model (``finished`` False for an
    interrupted run: then best.pt is the best epoch so far, and ``status`` says how far it
    got), a fine-tuned run's integers on the bit-accurate simulator (what the chip
    computes), an imported run's float network.

    A test file of other classes than the model's is a DataError; data or a model that
    would need more memory than ``NEURODELAY_MAX_GIB`` is a ResourceLimitError.
    ``device``: where a trained run's model runs (:func:`neurodelay.devices.resolve_device`;
    the simulators of the other kinds run on the CPU).

    Examples:
        >>> import tempfile
        >>> from neurodelay import api
        >>> from neurodelay.data import make_synthetic
        >>> tmp = tempfile.mkdtemp()
        >>> files = make_synthetic(tmp, sizes={"train": 64, "valid": 32, "test": 32})
        >>> res = api.train_run(f"{tmp}/run", preset="tiny", hidden=[8], epochs=1,
        ...                     train_file=str(files["train"]), test_file=str(files["test"]),
        ...                     cache_dir=tmp, threads=1, progress=False, log=lambda m: None)
        >>> ev = api.evaluate_run(f"{tmp}/run")
        >>> ev.n, ev.accuracy == res["test_accuracy"]
        (32, True)
    """
    batch_size = O.check_int(batch_size, "--batch-size", "the evaluation batch size", lo=1)
    dev = resolve_device(device)
    r = open_run(run)
    status = r.status()
    model = load_model(r) if r.kind == "trained" else None   # a missing best.pt first
    ds = run_test_data(r, test_file)
    if model is not None:
        with precision(dev):
            acc = _trained_accuracy(r, model.to(dev), ds, batch_size)
        what = "discrete model"
    else:
        x = pad_batch(ds.samples, pad_to=ds.max_steps)
        if r.kind == "finetuned":
            pred, _ = bitsim.predict(r.qnetwork(), x, batch_size=batch_size)
            what = "hardware-exact (bit-accurate integers)"
        else:
            _, pred = floatsim.predict(float_network(r), x, batch_size=batch_size)
            what = "float network (imported)"
        acc = float(np.mean(pred == ds.labels))
    return Evaluation(accuracy=acc, n=len(ds), run=str(r.path) if r.kind != "trained"
                      else str(run), test=test_file or "run's own test split",
                      finished=status.finished, status=status.describe(), model=what,
                      notes=list(ds.notes), device=str(dev) if model is not None else "cpu")


def _trained_accuracy(r, model, ds, batch_size: int) -> float:
    mc = model.cfg
    O.check_model_memory(mc.n_inputs, mc.hidden, mc.n_outputs, mc.window,
                         min(batch_size, len(ds)), ds.max_steps, training=False,
                         learned=mc.delays == "learned",
                         recurrent_window=mc.rec_window if mc.recurrent else 0,
                         what=f"evaluating {r.path} on {len(ds):,} samples (padded to the "
                              f"longest one)",
                         how="Use a smaller --batch-size, or evaluate on a file whose samples "
                             "are shorter")
    return accuracy(model, ds, batch_size)


__all__ = ["train_run", "evaluate_run", "Evaluation", "resolve_data", "make_configs", "check_options",
           "check_resume_options",
           "check_data_options"]
