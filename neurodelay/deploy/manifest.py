"""What an artifact folder is: its file names, the content hash of its quantized network,
its report (deploy.json) and the options it is built with.

:mod:`neurodelay.deploy.artifact` builds and loads the folders (and re-exports every name
here); the hash (:func:`qnet_hash`) is described in its module docstring.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from neurodelay.core.network import QNetwork
from neurodelay.errors import ArtifactError, OptionError
from neurodelay.fs import inside

DEFAULT_CALIB_SAMPLES = 256
DEFAULT_CALIB_SEED = 0
DEFAULT_MESSAGE_BITS = 8             # graded input bits declared to netx (at least)
FORMAT = "neurodelay-deploy"
FORMAT_VERSION = 1
FILES = {"qnet": "network.qnet.h5", "netx": "network.netx.h5", "lava": "network.lava.h5",
         "nir_float": "model.nir", "nir_quantized": "model.quantized.nir",
         "report": "deploy.json", "readme": "README.txt"}


# ----------------------------------------------------------------------------- hashing

def canonical_target(spec: dict | None, name: str) -> dict:
    """The target fields that change the arithmetic (not where the file lives)."""
    if not spec:
        return {"name": name}
    return {k: v for k, v in sorted(spec.items()) if k not in ("source", "description")}


def qnet_hash(qnet: QNetwork) -> str:
    """``sha256:<hex>`` of everything that determines what ``qnet`` computes."""
    h = hashlib.sha256()

    def put(tag: str, value) -> None:
        h.update(tag.encode())
        if isinstance(value, np.ndarray):
            a = np.ascontiguousarray(value, dtype="<i8")
            h.update(repr(a.shape).encode())
            h.update(a.tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True).encode())

    put("format", "neurodelay-qnet-hash-1")
    put("target", canonical_target(qnet.target_spec, qnet.target))
    put("dt", float(qnet.dt).hex())
    put("input_scale", float(qnet.input_scale).hex())
    put("class_names", [str(c) for c in qnet.class_names])
    for k, layer in enumerate(qnet.layers):
        put(f"layer{k}", [layer.name, layer.kind, int(layer.weight_exp),
                          int(layer.num_weight_bits), int(layer.bias_exp), int(layer.du),
                          int(layer.dv), None if layer.vth is None else int(layer.vth),
                          float(layer.scale).hex()])
        put("weight", layer.weight)
        put("delay", layer.delay)
        put("bias_mant", layer.bias_mant)
        if layer.recurrent:           # feed-forward hashes stay what they were
            put("recurrent", [int(layer.rec_weight_exp), int(layer.rec_num_weight_bits)])
            put("rec_weight", layer.rec_weight)
            put("rec_delay", layer.rec_delay)
    return "sha256:" + h.hexdigest()


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


# ----------------------------------------------------------------------------- report

@dataclass
class Calibration:
    """Where the quantizer's activity statistics came from (never test/valid data)."""

    source: str                  # "training split" | "file" | "none (weights only)"
    n: int = 0
    seed: int | None = None
    file: str | None = None
    indices_sha256: str | None = None
    description: str = ""


@dataclass
class DeployReport:
    """deploy.json: what was deployed, how, and its content hash."""

    artifact_hash: str
    target: dict                  # name, description, source
    weight_bits: int
    delay_bits: int
    max_delay: int
    input_scale: float
    layers: list                  # per layer: exponents, scale, vth, decays, headroom, ...
    calibration: dict
    resources: dict
    delays: dict                  # check_delays: clipped / zeroed counts
    netx: dict                    # input_message_bits, exact, layers
    source: dict                  # run, kind, model file and its sha256
    files: dict
    options: dict
    warnings: list = field(default_factory=list)
    # kind -> why the folder has (or lacks) that file (e.g. no netx file for a recurrent
    # network); empty in folders of older versions
    file_notes: dict = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    neurodelay_version: str = ""
    created: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "DeployReport":
        if d.get("format") != FORMAT:
            raise ArtifactError(f"{where}: not a neurodelay deploy report (format "
                                f"{d.get('format')!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"{where}: deploy report version {d.get('format_version')} "
                                f"is not supported (this neurodelay reads {FORMAT_VERSION})")

        names = {f.name for f in fields(cls)}
        missing = sorted(f.name for f in fields(cls) if f.name not in d
                         and f.default is MISSING and f.default_factory is MISSING)
        if missing:
            raise ArtifactError(f"{where}: missing {', '.join(missing)}")
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Artifact:
    """An artifact folder, its quantized network and its report."""

    folder: Path
    qnet: QNetwork
    report: DeployReport

    @property
    def hash(self) -> str:
        return self.report.artifact_hash

    def path(self, kind: str) -> Path:
        """The artifact's file of ``kind``, by the name deploy.json gives: refused when
        that name leads outside the artifact folder (directly or by a symbolic link)."""
        return inside(self.folder, self.report.files[kind], "artifact folder")

    @property
    def netx_path(self) -> Path:
        return self.path("netx")

    @property
    def lava_path(self) -> Path | None:
        """The Lava process network file (None in folders that have none)."""
        return self.path("lava") if "lava" in self.report.files else None

    @property
    def message_bits(self) -> int:
        return int(self.report.netx["input_message_bits"])


# ----------------------------------------------------------------------------- options

@dataclass
class DeployOptions:
    """How a run is deployed; the defaults come from the target."""

    target: str = "loihi2"
    weight_bits: int | None = None           # None: the target's
    clip_delays: bool = False
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    calib_seed: int = DEFAULT_CALIB_SEED
    calib_file: str | None = None

    def __post_init__(self):
        if int(self.calib_samples) < 1:
            raise OptionError(f"--calib-samples {self.calib_samples}: must be >= 1 (training "
                              f"samples the quantizer calibrates on; default "
                              f"{DEFAULT_CALIB_SAMPLES})")
        if self.weight_bits is not None and int(self.weight_bits) < 2:
            raise OptionError(f"--weight-bits {self.weight_bits}: must be >= 2")

    def describe(self) -> dict:
        return {"target": str(self.target), "weight_bits": self.weight_bits,
                "clip_delays": bool(self.clip_delays),
                "calib_samples": int(self.calib_samples), "calib_seed": int(self.calib_seed),
                "calib_file": str(self.calib_file) if self.calib_file else None}
