"""Summarise the SSHD experiments of scripts/sshd_experiments.sh into one JSON file.

    ./.venv/bin/python scripts/sshd_summary.py runs/sshd > runs/sshd/summary.json

Reads the run folders; recomputes the post-training quantized test accuracy of every
fine-tuning start (same delay mode, weight range and training calibration as the
fine-tuning run chose, so it is the network fine-tuning started from) and the NIR round
trip (weights, delays, thresholds, predictions of the re-imported networks).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from neurodelay.data.rundata import run_test_data
from neurodelay.train.loaders import float_network


def _json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def main(root: str) -> dict:
    from neurodelay import passes
    from neurodelay.data import pad_batch
    from neurodelay.hw.target import load_target
    from neurodelay.research.sweep import layer_synapses, memory_from_counts
    from neurodelay.runs import open_run
    from neurodelay.sim import bitsim, floatsim
    from neurodelay.train.finetune import (
        FinetuneConfig,
        calibration_batch,
        start_network,
        training_splits,
    )

    root = Path(root)
    parent = open_run(root / "learned")
    net = float_network(parent)
    ds = run_test_data(parent)
    x = pad_batch(ds.samples, pad_to=ds.max_steps)
    out = {"test_samples": len(ds),
           "float_discrete_accuracy": parent.result()["test_accuracy"],
           "float_30_epochs_accuracy": (open_run(root / "learned30").result()["test_accuracy"]
                                        if (root / "learned30").exists() else None),
           "verify": {k: v for k, v in (_json(root / "verify.json") or {}).items()
                      if k in ("pytorch_accuracy", "float_accuracy", "quantized_accuracy",
                               "float_agreement", "agreement", "float_hidden_spike_flips",
                               "float_hidden_spikes", "synaptic_memory_bytes",
                               "lava_samples", "lava_mismatches", "lava_s_per_sample",
                               "sim_s_per_sample", "artifact_hash", "passed")},
           "finetune": {}}
    for folder in sorted(root.glob("ft*_*")):
        if not folder.is_dir() or not (folder / "result.json").exists():
            continue
        run = open_run(folder)
        r = run.result()
        ft = run.config["finetune"]
        # the start it chose, rebuilt with the run's own settings (target, seed, calibration
        # size, training file) and the delay mode / weight range it picked on validation
        fc = FinetuneConfig(**ft)
        src = open_run(run.parent_path())
        tgt = load_target(fc.target)
        train, _, _ = training_splits(src, fc.seed, fc.train_file)
        calib, _ = calibration_batch(train, fc)
        reduced, _ = passes.reduce_delays(float_network(src), r["delay_bits"],
                                          r["delay_mode"], tgt.max_delay)
        q, _ = start_network(reduced, tgt, fc, r["weight_range"], calib)
        pred, _ = bitsim.predict(q, x)
        v = _json(root / f"{folder.name}.verify.json") or {}
        out["finetune"][folder.name] = {
            "parent": Path(src.path).name,
            "parent_float_accuracy": src.result()["test_accuracy"],
            "weight_bits": r["weight_bits"], "delay_bits": r["delay_bits"],
            "prune": ft["prune"], "delay_mode": r["delay_mode"],
            "weight_range": r["weight_range"], "epochs": ft["epochs"],
            "post_training_test_accuracy": float(np.mean(pred == ds.labels)),
            "post_training_memory_bytes": memory_from_counts(layer_synapses(q),
                                                             r["weight_bits"],
                                                             r["delay_bits"]),
            "finetuned_test_accuracy": r["test_accuracy"],
            "finetuned_memory_bytes": r["synaptic_memory_bytes"],
            "synapses": r["synapses"], "seconds": r["seconds"],
            "best_epoch": r["best_epoch"],
            "verify_agreement": v.get("agreement"),
            "verify_exact": v.get("reference_exact"),
            "lava_samples": v.get("lava_samples"), "lava_mismatches": v.get("lava_mismatches")}
    _, p0 = floatsim.predict(net, x)
    out["nir_round_trip"] = {}
    for name in ("imported", "imported104"):
        if not (root / name).exists():
            continue
        imp = float_network(open_run(root / name))
        _, p1 = floatsim.predict(imp, x)
        out["nir_round_trip"][name] = {
            "weights_equal": all(np.array_equal(a.weight, b.weight)
                                 for a, b in zip(net.layers, imp.layers)),
            "delays_equal": all(np.array_equal(a.delay[a.weight != 0], b.delay[a.weight != 0])
                                for a, b in zip(net.layers, imp.layers)),
            "biases_equal": all(np.array_equal(a.bias, b.bias)
                                for a, b in zip(net.layers, imp.layers)),
            "thresholds_equal_float32": all(np.float32(a.threshold) == np.float32(b.threshold)
                                            for a, b in zip(net.layers, imp.layers)),
            "decays_equal": all(a.decay == b.decay for a, b in zip(net.layers, imp.layers)),
            "predictions_equal": int(np.sum(p0 == p1)), "n": len(p0)}
    sweep = _json(root / "sweep" / "sweep.json")
    if sweep is not None:
        out["sweep_bits"] = sweep
    report = root / "ablation" / "report.csv"
    if report.exists():
        out["ablation_report_csv"] = report.read_text()
        out["ablation_training_seconds"] = {
            f.parent.parent.name + "/" + f.parent.name:
                round(sum(json.loads(line)["seconds"] for line in f.read_text().splitlines()
                          if line.strip()), 1)
            for f in sorted((root / "ablation").glob("*/seed*/metrics.jsonl"))}
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: sshd_summary.py RESULTS_FOLDER")
    print(json.dumps(main(sys.argv[1]), indent=2, default=str))
