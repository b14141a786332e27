"""verify: prove that what runs on the target is what was trained.

For a run and a target, on the same padded test samples:
1. PyTorch discrete model (the reference: delays rounded, one tap per synapse);
2. frozen float network (:mod:`neurodelay.sim.floatsim`): same predictions, readout diff;
3. quantized network on the bit-accurate simulator (:mod:`neurodelay.sim.bitsim`):
   accuracy and per-sample agreement with PyTorch;
4. optionally N samples through Lava's own fixed-point simulation, compared
   spike-for-spike with the bit-accurate simulator (:func:`neurodelay.sim.lavarun.cross_check`).
Plus the target's resource report. Every sample is padded to the same length (the
longest sample of the set) so predictions do not depend on batch composition.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from neurodelay.data import pad_batch


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def verify_run(run, target: str = "loihi2", *, test_file=None, lava: int = 0,
               weight_bits: int = 8, clip_delays: bool = False, batch_size: int = 256,
               progress: bool = True, log=print) -> dict:
    """Compare PyTorch, frozen float and bit-accurate quantized models on test data."""
    from tqdm.auto import tqdm

    from neurodelay.sim import bitsim, floatsim

    from neurodelay.deploy import passes
    from neurodelay.deploy.freeze import freeze_run
    from neurodelay.hw.config import load_target, resource_report
    from neurodelay.train.trainer import load_model, run_test_data

    tgt = load_target(target)
    model = load_model(run)
    net = freeze_run(run)
    ds = run_test_data(run, test_file)
    n, T = len(ds), ds.max_steps
    labels = np.asarray(ds.labels)
    out = {"run": str(run), "target": tgt.name, "n": n, "steps": T,
           "test": str(test_file) if test_file else "run's own test split"}

    if not tgt.has_delays and any(int(l.delay.max(initial=0)) > 0 for l in net.layers):
        raise passes.DelayRangeError(
            f"target {tgt.name!r} has no synaptic delays but the network uses delays up to "
            f"{max(int(l.delay.max(initial=0)) for l in net.layers)} steps: it cannot run "
            f"there (choose a target with delays, e.g. loihi2, or train with --delays none)")
    net_d, delay_report = passes.check_delays(net, tgt.max_delay, clip=clip_delays)

    pt_pred = np.empty(n, np.int64)
    fl_pred = np.empty(n, np.int64)
    q_pred = np.empty(n, np.int64)
    max_diff = 0.0
    n_readout_over, spike_flips, spikes_total = 0, 0, 0
    t_torch = t_float = t_bit = 0.0
    x_all = pad_batch(ds.samples, pad_to=T)
    t0 = time.perf_counter()
    qnet, qreport = passes.quantize(net_d, tgt, data=(x_all, labels), weight_bits=weight_bits)
    t_quant = time.perf_counter() - t0
    bar = tqdm(total=n, desc="verify", unit="sample", disable=not progress, leave=False)
    for sl in _chunks(n, batch_size):
        x = x_all[sl]
        t0 = time.perf_counter()
        with torch.no_grad():
            u_pt, spk_pt = model(torch.from_numpy(x), discrete=True, record=True)
            u_pt = u_pt.numpy()
        t_torch += time.perf_counter() - t0
        pt_pred[sl] = floatsim.readout_scores(u_pt).argmax(1)
        t0 = time.perf_counter()
        fs = floatsim.simulate(net, x, record=True)
        t_float += time.perf_counter() - t0
        fl_pred[sl] = fs.predictions
        diff = np.abs(fs.u - u_pt).max(axis=(1, 2))
        max_diff = max(max_diff, float(diff.max()))
        n_readout_over += int(np.count_nonzero(diff > 1e-4))
        for a, b in zip(spk_pt, fs.spikes):
            spike_flips += int(np.count_nonzero(a.numpy().astype(bool) != b))
            spikes_total += int(np.count_nonzero(b))
        t0 = time.perf_counter()
        q_pred[sl], _ = bitsim.predict(qnet, x)
        t_bit += time.perf_counter() - t0
        bar.update(sl.stop - sl.start)
    bar.close()

    res = resource_report(qnet, tgt)
    out.update({
        "pytorch_accuracy": float(np.mean(pt_pred == labels)),
        "float_accuracy": float(np.mean(fl_pred == labels)),
        "quantized_accuracy": float(np.mean(q_pred == labels)),
        "float_agreement": float(np.mean(fl_pred == pt_pred)),
        "agreement": float(np.mean(q_pred == pt_pred)),
        "float_max_readout_diff": max_diff,
        # float32 rounding (BN folded into W sums in another order) can flip a hidden
        # spike whose membrane lies within ~1e-7 of the threshold; counted here
        "float_hidden_spike_flips": spike_flips,
        "float_hidden_spikes": spikes_total,
        "float_samples_readout_diff_over_1e-4": n_readout_over,
        "synaptic_memory_bytes": int(res["totals"]["synaptic_memory_bytes"]),
        "resources": res,
        "quantization": _report_dict(qreport),
        "delays": _report_dict(delay_report),
        "seconds": {"pytorch": t_torch, "float_sim": t_float, "bit_sim": t_bit,
                    "quantize": t_quant},
        "weight_bits": weight_bits,
    })
    if lava:
        from neurodelay.sim.lavarun import cross_check

        k = min(int(lava), n)
        log(f"running {k} samples through Lava fixed_pt (Loihi2SimCfg) and the bit-accurate "
            f"simulator ...")
        cc = cross_check(qnet, x_all[:k])
        out.update({"lava_samples": cc["lava_samples"],
                    "lava_mismatches": cc["lava_mismatches"],
                    "lava_identical_predictions": cc["identical_predictions"],
                    "lava_s_per_sample": cc["lava_s_per_sample"],
                    # bit-accurate throughput as verification uses it (batched, whole set)
                    "sim_s_per_sample": t_bit / max(n, 1),
                    "sim_s_per_sample_same_samples": cc["sim_s_per_sample"],
                    "lava": {k2: v for k2, v in cc.items() if _jsonable(v)}})
    return out


def _jsonable(v) -> bool:
    return isinstance(v, (int, float, str, bool, type(None), list, dict))


def _report_dict(rep) -> dict:
    if rep is None:
        return {}
    if isinstance(rep, dict):
        return {k: v for k, v in rep.items() if _jsonable(v)}
    if hasattr(rep, "to_dict"):
        return rep.to_dict()
    from dataclasses import asdict, is_dataclass

    if is_dataclass(rep):
        return {k: v for k, v in asdict(rep).items() if _jsonable(v)}
    return {"text": str(rep)}


def format_verify(r: dict) -> str:
    """The table `neurodelay verify` prints."""
    from neurodelay.hw.config import format_resource_report

    lines = [f"verify {r['run']} on target {r['target']}: {r['n']} samples x {r['steps']} steps "
             f"({r['test']})", ""]
    rows = [("PyTorch discrete model", f"{r['pytorch_accuracy']:.4f}", "reference"),
            ("frozen float network", f"{r['float_accuracy']:.4f}",
             f"agreement {r['float_agreement']:.4f}, max readout diff "
             f"{r['float_max_readout_diff']:.2e} ({r['float_hidden_spike_flips']} of "
             f"{r['float_hidden_spikes']:,} hidden spikes differ: float32 rounding at "
             f"threshold; {r['float_samples_readout_diff_over_1e-4']} samples > 1e-4)"),
            (f"quantized {r['weight_bits']}-bit, bit-accurate", f"{r['quantized_accuracy']:.4f}",
             f"agreement with PyTorch {r['agreement']:.4f}")]
    w = max(len(a) for a, _, _ in rows)
    lines.append(f"{'model':<{w}}  accuracy  notes")
    for a, b, c in rows:
        lines.append(f"{a:<{w}}  {b:>8}  {c}")
    lines.append(f"{'synaptic memory':<{w}}  {r['synaptic_memory_bytes']:>8,} bytes")
    if "lava_samples" in r:
        lines += ["", f"Lava fixed_pt cross-check on {r['lava_samples']} samples: "
                      f"{r['lava_mismatches']} mismatches (every layer's spikes + readout v at "
                      f"every step), identical predictions: {r['lava_identical_predictions']}",
                  f"  seconds/sample: Lava {r['lava_s_per_sample']:.3f}; bit-accurate sim "
                  f"{r['sim_s_per_sample']:.5f} batched over all {r['n']} samples "
                  f"(x{r['lava_s_per_sample'] / max(r['sim_s_per_sample'], 1e-12):,.0f}), "
                  f"{r['sim_s_per_sample_same_samples']:.5f} on the same {r['lava_samples']} "
                  f"samples with every layer recorded"]
    lines += ["", format_resource_report(r["resources"])]
    return "\n".join(lines)
