"""Section ``verify``: the bit-accurate simulator (bitsim) against Lava ``fixed_pt`` on the
same random quantized 140-256-256-20 network and inputs: seconds per sample, the time
bitsim takes for an SHD-size test set, and a spike-exact check on the Lava samples."""
from __future__ import annotations

import time

import numpy as np
from bench_common import SHD_TEST_SAMPLES
from bench_harness import log

NAME = "verify"


def random_qnet(sizes, seed: int = 0, max_delay: int = 24):
    """Random integer network shaped like a quantized SHD model (8-bit mixed weights,
    delays 0..max_delay, LIF decay of tau = 1.005 steps, current cleared each step)."""
    from neurodelay.core.network import QLayer, QNetwork

    rng = np.random.default_rng(seed)
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == len(sizes) - 2
        w = rng.integers(-128, 128, (b, a))
        layers.append(QLayer(weight=w, weight_exp=0, num_weight_bits=8,
                             delay=rng.integers(0, max_delay + 1, (b, a)),
                             bias_mant=np.zeros(b, np.int64), bias_exp=0, du=4095, dv=4076,
                             vth=None if last else 400, scale=1.0 / 64,
                             kind="li" if last else "lif", name=f"fc{k}"))
    return QNetwork(layers, target="loihi2")


def run(args) -> dict:
    from neurodelay.sim import bitsim

    sizes = (140, 256, 256, 20)
    qnet = random_qnet(sizes)
    T = 100
    n_lava = args.lava_samples if args.lava_samples is not None else (1 if args.quick else 3)
    n_sim = 256 if args.quick else SHD_TEST_SAMPLES
    rng = np.random.default_rng(5)
    counts = rng.poisson(0.3, (n_sim, T, sizes[0])).astype(np.int64)
    n_steps = bitsim.steps_needed(qnet, T)
    log(f"\n[verify] random quantized {'-'.join(map(str, sizes))} network, {T}-step samples, "
        f"{n_steps} Lava rows each")
    out = {"network": "-".join(map(str, sizes)), "T": T, "n_steps": n_steps}

    # bitsim on many samples (the first n_lava of them are also run in Lava)
    t0 = time.perf_counter()
    sim = bitsim.run(qnet, counts, n_steps=n_steps)
    sim_s = time.perf_counter() - t0
    out["bitsim_samples"] = n_sim
    out["bitsim_s_per_sample"] = sim_s / n_sim
    out["shd_testset_verify_s"] = sim_s / n_sim * SHD_TEST_SAMPLES
    out["shd_testset_verify_measured"] = n_sim == SHD_TEST_SAMPLES
    log(f"  bitsim: {n_sim} samples in {sim_s:.2f} s = {sim_s / n_sim * 1e3:.2f} ms/sample; "
        f"SHD test set ({SHD_TEST_SAMPLES} samples): {out['shd_testset_verify_s']:.1f} s "
        f"({'measured' if out['shd_testset_verify_measured'] else 'extrapolated'})")
    if n_lava > 0:
        _lava(qnet, counts, n_lava, n_steps, sim, out)
    return out


def _lava(qnet, counts, n_lava, n_steps, sim, out) -> None:
    """The first ``n_lava`` samples in Lava and in bitsim (recording): times and the
    spike-exact comparison, into ``out``."""
    from neurodelay.sim import bitsim

    try:
        from neurodelay.sim import lavarun
    except ImportError as e:
        out["lava_error"] = f"neurodelay.sim.lavarun unavailable: {e}"
        log(f"  Lava: skipped ({out['lava_error']})")
        return
    lava = lavarun.run_lava(qnet, counts[:n_lava], n_steps)
    t0 = time.perf_counter()
    sim_few = bitsim.run(qnet, counts[:n_lava], n_steps=n_steps, record=True)
    few_s = (time.perf_counter() - t0) / n_lava
    mism = int(sum(int((a.astype(bool) != np.asarray(b).astype(bool)).sum())
                   for a, b in zip(lava["spikes"], sim_few.spikes)))
    mism += int((np.asarray(lava["v"]) != np.asarray(sim.v[:n_lava])).sum())
    out.update({
        "lava_samples": n_lava, "lava_s_per_sample": lava["s_per_sample"],
        "lava_compile_s": lava["compile_s"], "bitsim_s_per_sample_on_lava_samples": few_s,
        "spike_exact": mism == 0, "mismatches": mism,
        "lava_spikes_per_layer": [int(s.sum()) for s in lava["spikes"]],
        "sim_speedup_vs_lava": lava["s_per_sample"] / out["bitsim_s_per_sample"],
    })
    log(f"  Lava fixed_pt: {n_lava} sample(s), {lava['s_per_sample']:.2f} s/sample "
        f"(+ {lava['compile_s']:.1f} s compile); spike-exact: "
        f"{'yes' if mism == 0 else f'NO ({mism} mismatches)'} "
        f"(spikes per layer {out['lava_spikes_per_layer']})")
    log(f"  bitsim speed-up vs Lava per sample: {out['sim_speedup_vs_lava']:.0f}x "
        f"(bitsim on the {n_lava} Lava sample(s) alone: {few_s * 1e3:.1f} ms/sample)")


def record(out: dict, vb: dict) -> None:
    out["verify"] = vb
    out["sim_speedup_vs_lava"] = vb.get("sim_speedup_vs_lava")
    out["shd_testset_verify_s"] = vb["shd_testset_verify_s"]


def summary(out: dict, args) -> list[str]:
    return []
