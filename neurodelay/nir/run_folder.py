"""An imported NIR graph as a run folder (``neurodelay import-nir``): config.json +
network.h5, and the one line ``neurodelay inspect`` prints about where it came from.

The conversion itself is :mod:`neurodelay.nir.importer`'s; this module only writes (and
describes) the folder.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from neurodelay.core.network_io import save_network
from neurodelay.errors import NirImportError
from neurodelay.fs import atomic_write
from neurodelay.nir.graph import DEFAULT_MAX_DELAY_STEPS
from neurodelay.nir.importer import ImportResult, import_nir
from neurodelay.runs import RunLock, new_run


def import_to_run(path, out, dt: float | None = None, discretization: str = "euler", *,
                  overwrite: bool = False, max_delay_steps: int = DEFAULT_MAX_DELAY_STEPS,
                  n_channels: int | None = None, channel_bin: int | None = None,
                  max_time: float | None = None, log=None) -> dict:
    """Import ``path`` into a new *imported* run folder ``out`` (config.json + network.h5).

    The folder is locked while written, a non-empty one is refused unless ``overwrite``,
    and ``config.json`` is written last (atomically): a folder with a config is complete.
    Returns {"out", "config", "summary", "notes"}.


    Examples:
        Export a float network to NIR and import it back as a run folder:

        >>> import tempfile
        >>> from neurodelay.core.network import Layer, Network
        >>> hidden = Layer(weight=[[1.0, 1.0]], delay=[[2, 0]], bias=[0.0], decay=0.5,
        ...                threshold=1.5)
        >>> readout = Layer(weight=[[1.0]], delay=[[0]], bias=[0.0], decay=0.9, kind="li")
        >>> net = Network([hidden, readout], dt=0.01, n_channels=2, channel_bin=1)
        >>> from neurodelay.exporters.nir import export
        >>> from neurodelay.nir import import_to_run
        >>> tmp = tempfile.mkdtemp()
        >>> _ = export(net, f"{tmp}/model.nir")
        >>> res = import_to_run(f"{tmp}/model.nir", f"{tmp}/imported", log=lambda m: None)
        >>> res["config"]["kind"]
        'imported'
    """
    log = log or (lambda m: print(m, file=sys.stderr))
    if max_time is not None and not (float(max_time) > 0):
        raise NirImportError(f"max_time must be positive seconds, got {max_time}")
    res, source = import_nir(path, dt, discretization, max_delay_steps=max_delay_steps,
                             n_channels=n_channels, channel_bin=channel_bin)
    net = res.network
    out = Path(out)
    config = _run_config(res, source, max_time)
    with RunLock(out, "import-nir"), new_run(out, overwrite=overwrite) as removed:
        if removed:
            log(f"--overwrite: replacing {', '.join(sorted(p.name for p in removed))} in "
                f"{out}")
        save_network(net, out / "network.h5")
        atomic_write(out / "config.json", json.dumps(config, indent=2))
    for note in res.notes:
        log(f"note: {note}")
    return {"out": str(out), "config": config, "summary": describe_imported(config),
            "network": net.summary(), "notes": res.notes}


def _run_config(res: ImportResult, source: dict, max_time: float | None) -> dict:
    """The config.json of an imported run: its source, layers and data layout."""
    net = res.network
    return {
        "kind": "imported",
        "source": source,
        "network": "network.h5",
        "class_names": list(net.class_names),
        "n_outputs": net.layers[-1].n_out,
        "layers": [{**i, "kind": lay.kind, "n_in": lay.n_in, "n_out": lay.n_out,
                    "decay": lay.decay, "current_decay": lay.current_decay,
                    "threshold": lay.threshold if lay.kind == "lif" else None,
                    "reset": lay.reset, "recurrent": lay.recurrent}
                   for i, lay in zip(res.layers, net.layers)],
        "data": {"train": "", "valid": None, "test": None, "valid_speakers": None,
                 "test_speakers": None, "dt": net.dt, "channel_bin": net.channel_bin,
                 "n_channels": net.n_channels,
                 "max_time": None if max_time is None else float(max_time),
                 "cache_dir": None, "embedded": False},
        "notes": res.notes,
    }


def describe_imported(config: dict) -> str:
    """One line for ``neurodelay inspect``: where an imported run came from and how it was
    discretized."""
    src = config.get("source") or {}
    dt = src.get("dt")
    disc = src.get("discretization", "?")
    rule = {"euler": "forward Euler, decay 1 - dt/tau", "exp": "exponential, decay "
            "exp(-dt/tau)"}.get(disc, disc)
    sha = str(src.get("sha256") or "")[:12]
    gen = src.get("generator")
    dt_txt = f"{dt * 1000:g} ms" if isinstance(dt, (int, float)) else "?"
    return (f"imported from NIR {Path(str(src.get('file', '?'))).name} (sha256 {sha}, nir "
            f"{src.get('nir_version', '?')}{', written by ' + str(gen) if gen else ''}): "
            f"dt = {dt_txt}, discretization {disc} ({rule})")
