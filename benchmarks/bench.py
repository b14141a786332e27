#!/usr/bin/env python
"""neurodelay benchmarks: training steps, Lava verification, discrete inference, epochs.

    ./.venv/bin/python benchmarks/bench.py [--json] [--quick] [--threads N] [--only ...]

Everything that is compared is measured side by side in one run (repetitions of the
variants alternate A B B A ...; medians are reported), because the machine may be shared.
benchmarks/README.md describes every section; the code is in the modules next to this
file: bench_harness (thread settings, logging, timing, peak-RSS probes, JSON, commit),
bench_reference (the paper's reference model), bench_common (shapes, forwards, trainer,
the same-model check), bench_probe (the probe subprocess) and one module per section:

1. ``train`` (bench_train): a learned-delay training step (forward + loss + backward +
   Adam, as neurodelay.train.trainer) at the SHD shape 140-256-256-20 (T = 100, Td = 25,
   batch 64 and 256) and the SSC shape 140-512-512-35 (Td = 31, batch 128):
     reference      the paper's formulation: dcls Dcls1d 'gauss' on the left-padded input
                    + spikingjelly multi-step LIFNode (bench_reference, independent of
                    model.py)
     reference_ftz  the same with torch.set_flush_denormal(True) (sigma_min only; FTZ
                    acts on the calling thread only)
     neurodelay     DelaySNN.forward (neurodelay.train.dcls_conv)
   in two sigma regimes, sigma_max (SIG = Td/2) and sigma_min (SIG = 0.23 -> sigma 0.5),
   after a check that loss and every gradient agree; peak RSS of each in a subprocess.
2. ``verify`` (bench_verify): bitsim vs Lava fixed_pt on the same random quantized
   140-256-256-20 network (spike-exact check), s/sample, and bitsim's time for an
   SHD-size test set (2,264 samples of 100 steps; extrapolated with --quick).
3. ``infer`` (bench_infer): discrete inference of the frozen network: floatsim vs the
   PyTorch discrete model (reference conv1d + spikingjelly, the model's fast path, and
   dcls_conv.causal_conv).
4. ``fixed`` (bench_fixed): a ``--delays fixed-random`` training step, intdelay (model.py)
   vs conv1d over the whole window (the path before intdelay), and the learned step.
5. ``discrete`` (bench_discrete): the discrete model (no grad), conv1d vs intdelay in
   float32 (the fast path) and with float64 sums (the exact path verify runs).
6. ``epoch`` (bench_epoch): a whole shd-preset schedule, neurodelay vs the paper's
   formulation (the model's reference=True path), epochs alternating; per-epoch times.
7. ``verify_e2e`` (bench_verify_e2e): ``verify_run(run, "loihi2")`` without Lava on an
   SHD-size test set with a model trained here; skipped when ../shared/data is absent.
8. ``recurrent`` (bench_recurrent): the recurrent training step (``--recurrent``, learned
   recurrent delays) next to the feed-forward learned-delay step, same hidden size and data
   shape, sigma_max and sigma_min, the one-step recurrent step, and the discrete recurrent
   forward (floatsim vs the PyTorch discrete model); records the CPU model and threads.
9. ``kernels`` (bench_kernels): the hot convolution kernels per layer (spectral, multi-tap
   direct, one-tap), each with its useful multiply-adds (nonzero inputs x fan-out x taps)
   and achieved rate next to this machine's peak (a float32 matmul timed in the same run),
   the cost model's choice, and its constants refitted.

``--json`` prints one JSON object on stdout (log lines go to stderr) with at least
``train_speedup`` (per configuration: the smaller of the two sigma regimes' speed-ups),
``sim_speedup_vs_lava``, ``shd_testset_verify_s``, ``fixed_delay_train_speedup``,
``fixed_vs_learned_step``, ``discrete_forward_speedup`` (fast path; ``_float64``: exact
path), ``epoch_speedup``, ``verify_end_to_end_s``, ``recurrent_over_feedforward_step`` and
``peak_mac_per_s``; the header records the CPU model and flags (``cpu``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:     # when loaded from a file
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_harness as H  # noqa: E402  (imports no numpy / torch)

if __name__ == "__main__":
    OMP_WAIT_POLICY, BLAS_THREADS = H.early_env(sys.argv[1:])
else:  # imported (tests): leave the environment alone
    OMP_WAIT_POLICY, BLAS_THREADS = H.current_env()

import bench_discrete  # noqa: E402
import bench_epoch  # noqa: E402
import bench_fixed  # noqa: E402
import bench_infer  # noqa: E402
import bench_kernels  # noqa: E402
import bench_recurrent  # noqa: E402
import bench_train  # noqa: E402
import bench_verify  # noqa: E402
import bench_verify_e2e  # noqa: E402
import torch  # noqa: E402

# ReferenceForward .. make_batch: re-exported for the tests that load this file
# (tests/test_dcls_conv_lif.py's model check)
from bench_common import (  # noqa: E402,F401
    TRAIN_FULL,
    TRAIN_QUICK,
    ReferenceForward,
    build_model,
    check_equal,
    fast_forward,
    make_batch,
)
from bench_epoch import shd_extrapolation  # noqa: E402
from bench_probe import probe_main  # noqa: E402

MODULES = (bench_train, bench_verify, bench_infer, bench_fixed, bench_discrete,
           bench_epoch, bench_verify_e2e, bench_recurrent, bench_kernels)
SECTIONS = tuple(m.NAME for m in MODULES)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--quick", action="store_true", help="small sizes (about 2 minutes)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help="comma list of sections: " + ", ".join(SECTIONS))
    ap.add_argument("--configs", default=None,
                    help="comma list of training configurations (default: all of the mode)")
    ap.add_argument("--reps", type=int, default=None, help="timed steps per variant")
    ap.add_argument("--lava-samples", type=int, default=None,
                    help="samples run through Lava (default 3, --quick 1; 0 skips Lava)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    ap.add_argument("--epoch-epochs", type=int, default=None,
                    help="epochs of the epoch section's schedule (default 4, --quick 2)")
    ap.add_argument("--epoch-samples", type=int, default=None,
                    help="training samples of the epoch section (default 1024, --quick 128)")
    ap.add_argument("--e2e-epochs", type=int, default=None,
                    help="training epochs of the verify_e2e model (default 5, --quick 1)")
    ap.add_argument("--omp-wait-policy", default=None,
                    help="passive (default), active or default: OMP_WAIT_POLICY for torch's "
                         "OpenMP threads (read before torch is imported)")
    ap.add_argument("--blas-threads", default=None,
                    help="OPENBLAS_NUM_THREADS for numpy (bitsim, floatsim, Lava); default 1")
    ap.add_argument("--extrapolate", metavar="FILE.json", default=None,
                    help="measure nothing: print the full-SHD-run extrapolation from the "
                         "epoch section of a saved --json result")
    ap.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    return ap


def extrapolate(ap, path: str) -> int:
    """--extrapolate FILE: the full-SHD-run extrapolation of a saved result's epoch section."""
    try:
        ep = json.loads(Path(path).read_text())["epoch"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        ap.error(f"--extrapolate: {path} is not a saved result with an "
                 f"epoch section ({type(e).__name__}: {e})")
    print(json.dumps(shd_extrapolation(ep), indent=2))
    return 0


def check_options(ap, args) -> None:
    """The section list, the epoch options and the training configurations
    (``args.sections``, ``args.train_configs``), or a usage error."""
    args.sections = {s.strip() for s in args.only.split(",") if s.strip()}
    bad = args.sections - set(SECTIONS)
    if bad:
        ap.error(f"--only: unknown section(s) {sorted(bad)}; use {', '.join(SECTIONS)}")
    for opt in ("epoch_epochs", "epoch_samples", "e2e_epochs"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            ap.error(f"--{opt.replace('_', '-')} must be >= 1")
    args.train_configs = TRAIN_QUICK if args.quick else TRAIN_FULL
    if args.configs:
        allc = {**TRAIN_FULL, **TRAIN_QUICK}
        names = [c.strip() for c in args.configs.split(",") if c.strip()]
        unknown = [c for c in names if c not in allc]
        if unknown:
            ap.error(f"--configs: unknown {unknown}; known: {sorted(allc)}")
        args.train_configs = {c: allc[c] for c in names}


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.extrapolate:
        return extrapolate(ap, args.extrapolate)
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    # as the CLI does (NEURODELAY_MALLOC=default measures with glibc's own settings);
    # before the probes too, so their peak memory is what the CLI's would be
    from neurodelay.alloc import tune_allocator

    tune_allocator()
    if args._probe is not None:
        probe_main(args._probe)
        return 0
    if args.json:
        H.set_log_stream(sys.stderr)
    check_options(ap, args)
    t_start = time.perf_counter()
    out = H.run_info(args.quick, OMP_WAIT_POLICY, BLAS_THREADS)
    chosen = [m for m in MODULES if m.NAME in args.sections]
    for m in chosen:
        m.record(out, m.run(args))
    out["load_average_at_end"] = list(os.getloadavg())
    out["total_s"] = time.perf_counter() - t_start
    H.log(f"\ntotal {out['total_s']:.0f} s")
    for m in chosen:
        for line in m.summary(out, args):
            H.log(line)
    if args.json:
        H.write_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
