"""Fingerprint of a fixed-seed chain: train -> export -> verify -> finetune -> NIR.

Runs the chain with the installed (or PYTHONPATH-selected) neurodelay and prints one
JSON object: accuracies, artifact hashes, verify figures and a digest of every dataset
in the NIR files (their contents, not their bytes: HDF5 stores object times). Run it at
two commits and compare the JSON to show a change kept behaviour bit-identical:

    python benchmarks/chain_fingerprint.py --work /tmp/chain --sshd ../shared/data/sshd_tiny.h5
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path


def nir_digest(path: Path) -> str:
    import h5py
    import numpy as np

    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        items = []
        f.visititems(lambda n, o: items.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in sorted(items):
            v = np.asarray(f[name][()])
            h.update(name.encode())
            h.update(repr(v.tolist()).encode() if v.dtype == object else
                     v.dtype.str.encode() + repr(v.shape).encode() + v.tobytes())
    return h.hexdigest()[:16]


def cli(*args) -> str:
    p = subprocess.run([sys.executable, "-m", "neurodelay", *map(str, args)],
                       capture_output=True, text=True, env={**os.environ})
    if p.returncode != 0:
        raise SystemExit(f"neurodelay {' '.join(map(str, args))} failed:\n{p.stderr}")
    return p.stdout


def chain(work: Path, name: str, train_args: list) -> dict:
    run = work / name
    cli("train", "--out", run, "--seed", "3", "--threads", "1", "--no-progress", *train_args)
    out = {"eval": json.loads(cli("eval", run, "--json"))}
    cli("export", run, "--target", "loihi2")
    rep = json.loads((run / "deploy" / "loihi2" / "deploy.json").read_text())
    out["artifact_hash"] = rep["artifact_hash"]
    v = json.loads(cli("verify", run, "--target", "loihi2", "--lava", "2", "--json",
                       "--no-progress"))
    out["verify"] = {k: v.get(k) for k in ("passed", "float_accuracy", "quantized_accuracy",
                                           "lava_mismatches", "artifact_hash")
                     if k in v}
    ft = work / f"{name}-ft"
    cli("finetune", run, "--epochs", "2", "--out", ft, "--threads", "1", "--no-progress")
    out["finetune"] = {k: v for k, v in json.loads((ft / "result.json").read_text()).items()
                       if k not in ("seconds",)}
    cli("export", ft, "--target", "loihi2")
    out["finetune_artifact_hash"] = json.loads(
        (ft / "deploy" / "loihi2" / "deploy.json").read_text())["artifact_hash"]
    cli("export", run, "--target", "nir", "--out", work / f"{name}.nir")
    out["nir"] = nir_digest(work / f"{name}.nir")
    out["nir_quantized"] = nir_digest(run / "deploy" / "loihi2" / "model.quantized.nir")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--sshd", type=Path, help="an SHD-layout file (e.g. sshd_tiny.h5)")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    res = {"embedded": chain(a.work, "embedded", ["--epochs", "3"])}
    if a.sshd:
        res["sshd"] = chain(a.work, "sshd", ["--train-file", a.sshd, "--test-speakers", "0-3",
                                             "--epochs", "3", "--hidden", "16"])
    print(json.dumps(res, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
