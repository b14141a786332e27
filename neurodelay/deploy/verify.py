"""verify: prove that what runs on the chip is what was trained -- on the exported artifact.

``verify_run(run, target)`` takes the run's deployment artifact for that target (the one
``neurodelay export`` wrote, or builds it the same way first: one quantization,
calibrated on training data) and, on the same padded test samples, simulates each model
once:

1. the reference: the PyTorch discrete model (delays rounded, one tap per synapse; for a
   fine-tuned run its hardware-exact model; an imported NIR run has none, and the float
   network is the reference). A trained model runs its EXACT path here
   (``DelaySNN.set_discrete_dtype(torch.float64)``: the integer-delay operator summing in
   float64, cast to float32), not the float32 fast path of training and ``eval``; the
   result's ``pytorch_path`` says which path ran;
2. the frozen float network (:mod:`neurodelay.sim.floatsim`): same predictions, readout
   difference, hidden spike flips (float32 summation order);
3. the artifact's quantized network on the bit-accurate simulator
   (:mod:`neurodelay.sim.bitsim`): accuracy and per-sample agreement with the reference;
4. optionally the first N samples through Lava running the artifact's **netx file**
   (lava-dl ``netx.hdf5.Network``, ``Loihi2SimCfg(select_tag='fixed_pt')``), compared
   spike for spike with the bit-accurate simulator; a recurrent network (which netx
   cannot carry) runs as the Lava process network built from the artifact's
   ``network.lava.h5`` FILE (:func:`neurodelay.sim.lava_procs.build_from_file`), every
   layer's spikes and the readout compared at every step.

It passes when the quantized accuracy is at most ``tolerance`` percentage points below
the reference, Lava shows no mismatch, and the test input fits the graded-input width
the artifact declares; anything else is a FAIL with the reasons listed. The result is
a :class:`VerifyResult` whose ``to_dict()`` keeps the JSON keys of earlier versions and
adds ``artifact_hash`` (the string in the artifact's deploy.json).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from neurodelay.data import pad_batch
from neurodelay.data.rundata import run_test_data
from neurodelay.deploy.artifact import (
    DEFAULT_CALIB_SAMPLES,
    DeployOptions,
    artifact_for,
    load_artifact,
)
from neurodelay.errors import OptionError
from neurodelay.exporters.loihi2 import input_message_bits_for
from neurodelay.hw.resources import format_resource_report
from neurodelay.options import check_tolerance
from neurodelay.progress import bar
from neurodelay.runs import open_run
from neurodelay.sim import bitsim, floatsim
from neurodelay.train.loaders import float_network, load_model


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


@dataclass
class VerifyResult:
    """Everything verify measured (see the module docstring); JSON via ``to_dict()``."""

    run: str
    target: str
    n: int
    steps: int
    test: str
    reference: str
    artifact: str
    artifact_hash: str
    calibration: dict
    pytorch_accuracy: float | None
    float_accuracy: float | None
    quantized_accuracy: float
    float_agreement: float | None
    agreement: float
    float_max_readout_diff: float | None
    float_hidden_spike_flips: int | None
    float_hidden_spikes: int | None
    float_samples_readout_diff_over_1e_4: int | None
    synaptic_memory_bytes: int
    resources: dict
    quantization: dict
    delays: dict
    seconds: dict
    weight_bits: int
    tolerance_pp: float
    accuracy_drop_pp: float
    passed: bool
    problems: list = field(default_factory=list)
    lava: dict | None = None
    sim_s_per_sample: float = 0.0
    reference_exact: dict | None = None        # fine-tuned runs: readout/spike equality
    pytorch_path: str | None = None            # how the PyTorch reference was computed

    @property
    def reference_accuracy(self) -> float:
        return self.pytorch_accuracy if self.pytorch_accuracy is not None \
            else self.float_accuracy

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "lava"}
        d["float_samples_readout_diff_over_1e-4"] = d.pop(
            "float_samples_readout_diff_over_1e_4")
        if self.lava is not None:
            d.update({"lava_samples": self.lava["lava_samples"],
                      "lava_mismatches": self.lava["lava_mismatches"],
                      "lava_identical_predictions": self.lava["identical_predictions"],
                      "lava_s_per_sample": self.lava["lava_s_per_sample"],
                      "sim_s_per_sample_same_samples": self.lava["sim_s_per_sample"],
                      "lava_source": self.lava["lava_source"], "lava": self.lava})
        return d


PYTORCH_PATH_EXACT = "integer-delay operator, float64 (exact to float32 rounding)"
PYTORCH_PATH_HW = "hardware-exact model (the chip's integer arithmetic in float64)"


def _reference_model(run):
    """(name, model or None, path): the PyTorch model verify compares against and how it
    computes. A trained DelaySNN is switched to its exact float64 discrete path."""

    if run.kind == "trained":
        model = load_model(run)
        model.set_discrete_dtype(torch.float64)
        return "PyTorch discrete model", model, PYTORCH_PATH_EXACT
    if run.kind == "finetuned":
        return "PyTorch hardware-exact model", load_model(run), PYTORCH_PATH_HW
    return "float network (imported NIR graph: no PyTorch model)", None, None


def verify_run(run=None, target: str = "loihi2", *, artifact=None, test_file=None,
               lava: int = 0, weight_bits: int | None = None, clip_delays: bool = False,
               calib_samples: int | None = None, calib_seed: int = 0,
               calib_file=None, tolerance: float = 0.5,
               batch_size: int = 256, progress: bool = True, log=print) -> VerifyResult:
    """Verify a run's deployment artifact on test data (module docstring).

    ``artifact``: an artifact folder to verify (its source run gives the reference and
    the test split unless ``run``/``test_file`` say otherwise); else the run's artifact
    for ``target`` and the deploy options, built first if it does not exist yet.


    Examples:
        Verify a small run's Loihi 2 artifact (built first), with Lava on one sample:

        >>> import tempfile
        >>> from neurodelay import api
        >>> from neurodelay.data import make_synthetic
        >>> tmp = tempfile.mkdtemp()
        >>> files = make_synthetic(tmp, sizes={"train": 64, "valid": 32, "test": 32})
        >>> _ = api.train_run(f"{tmp}/run", preset="tiny", hidden=[8], epochs=1,
        ...                   train_file=str(files["train"]), test_file=str(files["test"]),
        ...                   cache_dir=tmp, threads=1, progress=False, log=lambda m: None)
        >>> from neurodelay.deploy.verify import verify_run
        >>> v = verify_run(f"{tmp}/run", "loihi2", lava=1, progress=False,
        ...                log=lambda m: None)
        >>> v.n, v.lava["lava_mismatches"], v.float_hidden_spike_flips
        (32, 0, 0)
    """

    tolerance = check_tolerance(tolerance)      # before any file is read or written
    opts = dict(target=target, weight_bits=weight_bits, clip_delays=clip_delays,
                calib_samples=calib_samples or DEFAULT_CALIB_SAMPLES,
                calib_seed=calib_seed, calib_file=calib_file)
    r, art, t_artifact = _open_artifact(run, artifact, opts, log)
    ds = run_test_data(r, test_file)
    n, T = len(ds), ds.max_steps
    labels = np.asarray(ds.labels)
    ref_name, model, pytorch_path = _reference_model(r)
    net = float_network(r) if r.kind != "finetuned" else None
    x_all = pad_batch(ds.samples, pad_to=T)
    sims = _simulate(art.qnet, model, net, x_all, exact=r.kind == "finetuned",
                     batch_size=batch_size, progress=progress)
    scores = _scores(sims, labels, n)
    problems = _problems(art, x_all, sims, scores, tolerance)
    cc = _lava_check(art, x_all[:min(int(lava), n)], problems, log) if lava else None
    both = model is not None and net is not None
    res = art.report.resources
    return VerifyResult(
        run=str(r.path), target=art.qnet.target, n=n, steps=T,
        test=str(test_file) if test_file else "run's own test split", reference=ref_name,
        artifact=str(art.folder), artifact_hash=art.hash,
        calibration=art.report.calibration,
        pytorch_accuracy=scores["pytorch"], float_accuracy=scores["float"],
        quantized_accuracy=scores["quantized"], float_agreement=scores["float_agreement"],
        agreement=scores["agreement"],
        float_max_readout_diff=sims.max_diff if both else None,
        float_hidden_spike_flips=sims.flips if both else None,
        float_hidden_spikes=sims.spikes_total if both else None,
        float_samples_readout_diff_over_1e_4=sims.n_readout_over if both else None,
        synaptic_memory_bytes=int(res["totals"]["synaptic_memory_bytes"]), resources=res,
        quantization={"layers": art.report.layers, "warnings": art.report.warnings},
        delays=art.report.delays,
        seconds={"pytorch": sims.t_torch, "float_sim": sims.t_float, "bit_sim": sims.t_bit,
                 "artifact": t_artifact},
        weight_bits=art.report.weight_bits, tolerance_pp=float(tolerance),
        accuracy_drop_pp=scores["drop"], passed=not problems, problems=problems, lava=cc,
        sim_s_per_sample=sims.t_bit / max(n, 1), reference_exact=sims.exact,
        pytorch_path=pytorch_path)


def _open_artifact(run, artifact, opts: dict, log):
    """(run, artifact, seconds spent building it): the artifact folder given, or the
    run's artifact for the deploy options ``opts`` (built first if it is not there)."""

    if artifact is not None:
        art = load_artifact(artifact)
        run = run if run is not None else art.report.source["run"]
    elif run is None:
        raise OptionError("verify needs a run folder or --artifact DIR")
    r = open_run(run)
    if artifact is not None:
        return r, art, 0.0
    options = DeployOptions(**opts)
    t0 = time.perf_counter()
    art = artifact_for(r, options, log=log)
    return r, art, time.perf_counter() - t0


@dataclass
class _Simulated:
    """Predictions of every model on the test set, and how the float network differs."""

    pt_pred: np.ndarray | None                 # the PyTorch reference (None: no model)
    fl_pred: np.ndarray | None                 # the frozen float network (None: none)
    q_pred: np.ndarray | None                  # the bit-accurate simulator
    exact: dict | None                         # fine-tuned runs: readout/spike equality
    max_diff: float = 0.0                      # float network vs. PyTorch readout
    n_readout_over: int = 0                    # samples with a readout diff > 1e-4
    flips: int = 0                             # hidden spikes that differ
    spikes_total: int = 0                      # hidden spikes of the float network
    t_torch: float = 0.0
    t_float: float = 0.0
    t_bit: float = 0.0


def _simulate(qnet, model, net, x_all: np.ndarray, *, exact: bool, batch_size: int,
              progress: bool) -> _Simulated:
    """Each model once over ``x_all`` (in chunks of ``batch_size``): the PyTorch reference,
    the float network and, for a fine-tuned run (``exact``), one recorded bit-accurate
    pass compared with the reference; else the bit-accurate simulator batched at the end."""

    n = len(x_all)
    sims = _Simulated(
        pt_pred=np.empty(n, np.int64) if model is not None else None,
        fl_pred=np.empty(n, np.int64) if net is not None else None,
        q_pred=np.empty(n, np.int64) if exact else None,
        exact={"readout_equal": True, "spikes_equal": True} if exact else None)
    pbar = bar(total=n, desc="verify", unit="sample", enabled=progress, leave=False)
    for sl in _chunks(n, batch_size):
        _simulate_chunk(sims, qnet, model, net, x_all[sl], sl)
        pbar.update(sl.stop - sl.start)
    pbar.close()
    if sims.q_pred is None:
        t0 = time.perf_counter()
        sims.q_pred, _ = bitsim.predict(qnet, x_all, batch_size=batch_size)
        sims.t_bit = time.perf_counter() - t0
    return sims


def _simulate_chunk(sims: _Simulated, qnet, model, net, x: np.ndarray, sl: slice) -> None:
    u_pt = spk_pt = None
    if model is not None:
        t0 = time.perf_counter()
        u_pt, spk_pt = _forward(model, x)
        sims.t_torch += time.perf_counter() - t0
        sims.pt_pred[sl] = floatsim.readout_scores(u_pt).argmax(1)
    if net is not None:
        t0 = time.perf_counter()
        fs = floatsim.simulate(net, x, record=True)
        sims.t_float += time.perf_counter() - t0
        sims.fl_pred[sl] = fs.predictions
        if u_pt is not None:
            _compare_float(sims, fs, u_pt, spk_pt)
    if sims.exact is not None:      # one recorded bit-accurate pass: compared and scored
        t0 = time.perf_counter()
        sims.q_pred[sl] = _compare_exact(qnet, x, u_pt, spk_pt, sims.exact)
        sims.t_bit += time.perf_counter() - t0


def _compare_float(sims: _Simulated, fs, u_pt, spk_pt) -> None:
    """Add the float network's readout and hidden spike differences from the PyTorch
    reference on one chunk to ``sims``."""

    diff = np.abs(fs.u - u_pt).max(axis=(1, 2))
    sims.max_diff = max(sims.max_diff, float(diff.max()))
    sims.n_readout_over += int(np.count_nonzero(diff > 1e-4))
    for a, b in zip(spk_pt, fs.spikes):
        sims.flips += int(np.count_nonzero(a.astype(bool) != b))
        sims.spikes_total += int(np.count_nonzero(b))


def _scores(sims: _Simulated, labels: np.ndarray, n: int) -> dict:
    """Accuracies (None for a model that did not run), agreements, and the reference's
    correct predictions the quantized network lost (``lost``; ``drop`` in pp)."""

    pt, fl, q = sims.pt_pred, sims.fl_pred, sims.q_pred
    ref = pt if pt is not None else fl
    lost = int(np.sum(ref == labels)) - int(np.sum(q == labels))
    return {"pytorch": float(np.mean(pt == labels)) if pt is not None else None,
            "float": float(np.mean(fl == labels)) if fl is not None else None,
            "quantized": float(np.mean(q == labels)),
            "reference": float(np.mean(ref == labels)),
            "float_agreement": (float(np.mean(fl == pt))
                                if fl is not None and pt is not None else None),
            "agreement": float(np.mean(q == ref)),
            "lost": lost, "n": n, "drop": 100.0 * lost / max(n, 1)}


def _problems(art, x_all: np.ndarray, sims: _Simulated, scores: dict,
              tolerance: float) -> list:
    """Why verify fails, before the Lava cross-check (empty: it passes so far)."""

    problems = []
    if drop_exceeds(scores["lost"], scores["n"], tolerance):
        problems.append(f"quantized accuracy {scores['quantized']:.4f} is "
                        f"{scores['drop']:.2f} pp below the reference "
                        f"{scores['reference']:.4f} (tolerance {tolerance} pp)")
    need = _message_bits_needed(art.qnet, x_all)
    if need > art.message_bits:
        problems.append(f"test input counts need {need}-bit graded spikes, the artifact's "
                        f"netx file declares {art.message_bits} bits")
    exact = sims.exact
    if exact is not None and not (exact["readout_equal"] and exact["spikes_equal"]):
        problems.append("the hardware-exact PyTorch model and the bit-accurate simulator "
                        "differ (they must be equal by construction)")
    res = art.report.resources
    if res.get("violations"):
        problems.append(f"{len(res['violations'])} target limit violation(s)")
    return problems


def _lava_check(art, x: np.ndarray, problems: list, log) -> dict:
    """The samples ``x`` through Lava running the artifact's netx file and through the
    bit-accurate simulator (:func:`neurodelay.sim.lavarun.cross_check`); a mismatch is
    added to ``problems``."""

    from neurodelay.sim.lavarun import cross_check  # Lava takes seconds to import

    if "netx" in art.report.files:
        log(f"running {len(x)} samples of the exported netx file {art.netx_path} through "
            f"Lava fixed_pt (Loihi2SimCfg) and the bit-accurate simulator ...")
        cc = cross_check(art.qnet, x, netx_path=art.netx_path,
                         message_bits=art.message_bits).to_dict()
        what = "netx file"
    else:       # a recurrent network: the Lava process network built from its file
        log(f"running {len(x)} samples through the Lava process network built from the "
            f"exported file {art.lava_path} (Loihi2SimCfg fixed_pt) and the bit-accurate "
            f"simulator ...")
        cc = cross_check(art.qnet, x, lava_path=art.lava_path).to_dict()
        what = "Lava process network file"
    if cc["lava_mismatches"]:
        problems.append(f"Lava ({what}) and the bit-accurate simulator differ in "
                        f"{cc['lava_mismatches']} entries; first: {cc['first_mismatch']}")
    return cc


def drop_exceeds(lost: int, n: int, tolerance_pp: float) -> bool:
    """True when ``lost`` correct predictions out of ``n`` exceed ``tolerance_pp``
    percentage points, counted in whole samples (0.5 pp of 400 samples is 2 samples;
    floating point must not turn 2 lost samples into 0.500000001 pp). A tolerance that
    is not a finite number >= 0 is an OptionError (NaN would never exceed: always PASS)."""

    return 100 * int(lost) > check_tolerance(tolerance_pp) * int(n) + 1e-9


def _forward(model, x: np.ndarray):
    """(readout membrane (B, T, C) numpy, hidden spikes list of (B, T, n) numpy)."""

    with torch.no_grad():
        u, spikes = model(torch.from_numpy(x), discrete=True, record=True)
    return u.numpy(), [s.numpy() for s in spikes]


def _compare_exact(qnet, x, u_pt, spk_pt, exact: dict) -> np.ndarray:
    """Fine-tuned runs: the model's readout and hidden spikes must equal bitsim's.
    Returns bitsim's predictions for x (so the chunk is simulated once)."""

    L = len(qnet.layers)
    T = x.shape[1]
    res = bitsim.run(qnet, bitsim.quantize_input(qnet, x), n_steps=T + L, record=True,
                     stats=False)
    u_q = bitsim.align_to_float(res, T).astype(np.float64) * qnet.layers[-1].scale
    exact["readout_equal"] &= bool(np.array_equal(u_q, np.asarray(u_pt, np.float64)))
    for k, s in enumerate(spk_pt):
        exact["spikes_equal"] &= bool(np.array_equal(
            res.spikes[k][:, k + 1:k + 1 + T], np.asarray(s).astype(bool)))
    return bitsim.readout_scores(u_q).argmax(axis=1)


def _message_bits_needed(qnet, x: np.ndarray) -> int:
    return input_message_bits_for(x, qnet.input_scale)


def format_verify(r: VerifyResult) -> str:
    """The table `neurodelay verify` prints."""

    lines = [f"verify {r.run} on target {r.target}: {r.n} samples x {r.steps} steps "
             f"({r.test})",
             f"artifact {r.artifact}",
             f"  artifact_hash {r.artifact_hash}",
             f"  calibration: {r.calibration.get('description') or r.calibration['source']}",
             ""]
    if r.pytorch_path:
        lines.insert(-1, f"  PyTorch reference path: {r.pytorch_path}")
    rows = []
    if r.pytorch_accuracy is not None:
        rows.append((r.reference, f"{r.pytorch_accuracy:.4f}", "reference"))
    if r.float_accuracy is not None:
        if r.pytorch_accuracy is not None:
            note = (f"agreement {r.float_agreement:.4f}, max readout diff "
                    f"{r.float_max_readout_diff:.2e} ({r.float_hidden_spike_flips} of "
                    f"{r.float_hidden_spikes:,} hidden spikes differ: float32 rounding at "
                    f"threshold; {r.float_samples_readout_diff_over_1e_4} samples > 1e-4)")
        else:
            note = "reference (" + r.reference + ")"
        rows.append(("frozen float network", f"{r.float_accuracy:.4f}", note))
    rows.append((f"quantized {r.weight_bits}-bit, bit-accurate", f"{r.quantized_accuracy:.4f}",
                 f"agreement with the reference {r.agreement:.4f}"))
    w = max(len(a) for a, _, _ in rows)
    lines.append(f"{'model':<{w}}  accuracy  notes")
    for a, b, c in rows:
        lines.append(f"{a:<{w}}  {b:>8}  {c}")
    lines.append(f"{'synaptic memory':<{w}}  {r.synaptic_memory_bytes:>8,} bytes")
    if r.reference_exact is not None:
        lines.append(f"hardware-exact model == bit-accurate simulator: readout "
                     f"{r.reference_exact['readout_equal']}, hidden spikes "
                     f"{r.reference_exact['spikes_equal']}")
    if r.lava is not None:
        lv = r.lava
        lines += ["", f"Lava fixed_pt cross-check of the exported {lv['lava_source']} on "
                      f"{lv['lava_samples']} samples: {lv['lava_mismatches']} mismatches "
                      f"(every layer's spikes + readout v at every step), identical "
                      f"predictions: {lv['identical_predictions']}",
                  f"  seconds/sample: Lava {lv['lava_s_per_sample']:.3f}; bit-accurate sim "
                  f"{r.sim_s_per_sample:.5f} batched over all {r.n} samples "
                  f"(x{lv['lava_s_per_sample'] / max(r.sim_s_per_sample, 1e-12):,.0f}), "
                  f"{lv['sim_s_per_sample']:.5f} on the same {lv['lava_samples']} samples "
                  f"with every layer recorded"]
    s = r.seconds
    lines.append(f"seconds: artifact {s['artifact']:.1f}, reference {s['pytorch']:.1f}, "
                 f"float sim {s['float_sim']:.1f}, bit-accurate sim {s['bit_sim']:.1f}")
    lines += ["", format_resource_report(r.resources)]
    verdict = "PASS" if r.passed else "FAIL"
    d = r.accuracy_drop_pp
    side = (f"{d:.2f} pp below" if d > 0 else f"{-d:.2f} pp above" if d < 0 else "equal to")
    lines.append(f"{verdict}: quantized accuracy is {side} the "
                 f"reference (tolerance {r.tolerance_pp} pp)"
                 + (f", Lava mismatches {r.lava['lava_mismatches']}" if r.lava else ""))
    lines += [f"  - {p}" for p in r.problems]
    return "\n".join(lines)
