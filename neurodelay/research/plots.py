"""Figures of one run: ``plot_run(run) -> [paths]`` writes PNGs into ``run/plots/``.

* ``kernels.png``          delay kernels of sample synapses over training (cf. the paper's
                           Fig. 4): the Gaussian at the initial position (rebuilt exactly
                           from the seed) with the first epoch's sigma, the Gaussian at the
                           final (best-epoch) position with every recorded epoch's sigma, and
                           the discrete tap (weight at the integer delay) the model ends with.
                           Positions of intermediate epochs are not stored in a run, and the
                           figure says so.
* ``delay_histograms.png`` integer delays of all used synapses, one panel per layer
                           (from ``neurodelay.train.loaders.float_network``).
* ``training_curves.png``  loss, train / validation accuracy and sigma per epoch
                           (``metrics.jsonl``).
* ``raster.png``           one test sample through the frozen network
                           (``floatsim.simulate(..., record=True)``): input counts, spikes of
                           every hidden layer, readout membranes.

Not part of ``plot_run`` (it builds or reads a deployment artifact):
:func:`plot_verify_raster`, one test sample through the PyTorch model and through the
chip's arithmetic (the bit-accurate simulator on the run's artifact), spikes overlaid
(:func:`verify_spikes` computes them).

Matplotlib is used through ``matplotlib.figure.Figure`` (Agg canvas), never pyplot, so no
display or global backend is touched. Files are written atomically.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from neurodelay.data.batches import pad_batch
from neurodelay.data.rundata import run_test_data
from neurodelay.deploy.artifact import artifact_for, load_artifact
from neurodelay.deploy.manifest import DeployOptions
from neurodelay.errors import PlotError
from neurodelay.fs import atomic_write
from neurodelay.options import check_int
from neurodelay.research.study import initial_model
from neurodelay.runs import RunError, open_run, read_jsonl
from neurodelay.sim import bitsim
from neurodelay.sim.floatsim import readout_scores, simulate
from neurodelay.train.loaders import float_network, load_model

PLOT_FILES = ("kernels.png", "delay_histograms.png", "training_curves.png", "raster.png")


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write(path, buf.getvalue())


def _figure(w: float, h: float):
    from matplotlib.figure import Figure  # lazy: matplotlib only for figures

    return Figure(figsize=(w, h), dpi=110)


def read_metrics(run) -> list[dict]:
    """The per-epoch records of ``run/metrics.jsonl`` (a PlotError if missing or empty)."""

    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        raise PlotError(f"{path}: missing; is {run} a `neurodelay train` run?")
    try:
        recs = read_jsonl(path, "per-epoch metrics")
    except RunError as e:
        raise PlotError(str(e)) from None
    if not recs:
        raise PlotError(f"{path}: no finished epoch yet; train at least one epoch")
    return recs


def _require_model(run: Path) -> None:
    if not (run / "config.json").exists():
        raise PlotError(f"{run}: no config.json; not a `neurodelay train` run folder")
    kind = open_run(run).kind
    if kind != "trained":
        raise PlotError(f"{run}: a {kind} run has no Gaussian kernels or training positions "
                        f"to draw; `neurodelay plot` draws a `neurodelay train` run (for a "
                        f"fine-tuned run, `neurodelay plot RUN --verify TARGET` draws its "
                        f"PyTorch vs chip spike raster)")
    if not (run / "best.pt").exists():
        raise PlotError(f"{run}/best.pt: missing; the run has not finished an epoch yet")


# ------------------------------------------------------------------------------ kernels
def gaussian_kernel(position: float, sigma: float, window: int, weight: float = 1.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(delays 0..window-1, kernel values) of one DCLS 'gauss' synapse.

    ``position`` is the dcls parameter P, ``sigma`` the effective std (SIG + 0.27, as
    metrics.jsonl logs it). Tap n = exp(-(n - (P + window//2))^2 / (2 sigma^2)),
    normalised to sum 1 over the window, times the weight; tap n is delay window-1-n.
    """
    n = np.arange(window, dtype=np.float64)
    k = np.exp(-0.5 * ((n - (position + window // 2)) / sigma) ** 2)
    k = k / (k.sum() + 1e-7) * weight
    return (window - 1 - n).astype(int)[::-1], k[::-1]


def _sample_synapses(weight: np.ndarray, count: int) -> list[tuple[int, int]]:
    """The ``count`` synapses (out, in) with the largest |weight| (deterministic)."""
    flat = np.argsort(-np.abs(weight), axis=None, kind="stable")[:count]
    return [tuple(int(i) for i in np.unravel_index(f, weight.shape)) for f in flat]


def plot_kernels(run, path: Path, synapses: int = 4) -> Path:
    run = Path(run)
    metrics = read_metrics(run)
    cfg = open_run(run).config
    final, start = load_model(run), initial_model(run)
    layers = list(range(len(final.all_synapses())))
    shown = layers[:3]
    # sigma is logged per epoch (None, or a dummy in older runs, when delays are not learned)
    rec = [(int(m["epoch"]), float(m["sigma"])) for m in metrics if m.get("sigma") is not None]
    learned = (final.cfg.delays == "learned" and cfg["train"].get("learn") != "weights"
               and bool(rec))
    epochs = [e for e, _ in rec]
    sigmas = [s for _, s in rec]
    fig = _figure(3.0 * synapses + 1.0, 2.5 * len(shown) + 0.9)
    import matplotlib  # lazy: matplotlib only for figures

    cmap = matplotlib.colormaps["viridis"]
    for row, li in enumerate(shown):
        syn, syn0 = final.all_synapses()[li], start.all_synapses()[li]
        w = syn.weight_matrix().numpy()
        w0 = syn0.weight_matrix().numpy()
        P = syn.conv.P.detach().reshape(syn.n_out, syn.n_in).numpy()
        P0 = syn0.conv.P.detach().reshape(syn0.n_out, syn0.n_in).numpy()
        D = syn.integer_delays().numpy()
        win = syn.window
        name = f"hidden{li}" if li < len(layers) - 1 else "readout"
        for col, (o, i) in enumerate(_sample_synapses(w, synapses)):
            ax = fig.add_subplot(len(shown), synapses, row * synapses + col + 1)
            if learned:
                d, k = gaussian_kernel(P0[o, i], sigmas[0], win, w0[o, i])
                ax.plot(d, k, color="0.6", lw=1.2, ls=":", label=f"start (σ={sigmas[0]:.2f})")
                for j, (e, s) in enumerate(zip(epochs, sigmas)):
                    d, k = gaussian_kernel(P[o, i], s, win, w[o, i])
                    frac = j / max(1, len(epochs) - 1)
                    ax.plot(d, k, color=cmap(frac), lw=1.0,
                            label=f"end pos., ep {e} σ" if j in (0, len(epochs) - 1) else None)
            ax.vlines([D[o, i]], 0, [w[o, i]], color="crimson", lw=2.2, label="discrete tap")
            ax.plot([D[o, i]], [w[o, i]], "o", color="crimson", ms=3)
            ax.axhline(0, color="0.8", lw=0.6)
            ax.set_xlim(-0.5, win - 0.5)
            ax.set_title(f"{name} syn {o}<-{i}: d={D[o, i]}, w={w[o, i]:+.2f}", fontsize=7)
            ax.tick_params(labelsize=6)
            if row == len(shown) - 1:
                ax.set_xlabel("delay (steps)", fontsize=7)
            if row == 0 and col == 0:
                ax.legend(fontsize=5.5, loc="best")
    if learned:
        head = (f"Delay kernels of the {synapses} largest-|w| synapses per layer. Dotted: initial "
                f"position with epoch-1 σ; lines (dark→light = epoch 1→{epochs[-1]}): FINAL "
                f"(best-epoch) position with each epoch's σ\n(intermediate positions are not "
                f"stored); red: the discrete tap used at evaluation and on hardware")
    else:
        head = (f"Delays are not learned in this run (delays={final.cfg.delays}, "
                f"learn={cfg['train'].get('learn')}): each synapse is one tap throughout")
    fig.suptitle(head, fontsize=7.5)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, Path(path))


# ------------------------------------------------------------------------------ delays
def plot_delay_histograms(run, path: Path, net=None) -> Path:
    net = net if net is not None else float_network(run)
    window = int(net.meta.get("model_config", {}).get("max_delay_steps", 0)) or None
    n = len(net.layers)
    fig = _figure(3.2 * n, 3.0)
    for k, layer in enumerate(net.layers):
        ax = fig.add_subplot(1, n, k + 1)
        d = layer.delay[layer.weight != 0]
        top = max(int(d.max()) if d.size else 0, (window or 1) - 1)
        ax.hist(d, bins=np.arange(-0.5, top + 1.5), color="steelblue", edgecolor="white")
        mean = f"mean {d.mean():.1f}" if d.size else "no synapses"
        ax.set_title(f"{layer.name or f'layer {k}'}: {d.size} synapses, {mean}", fontsize=8)
        ax.set_xlabel("delay (steps of %g ms)" % (net.dt * 1000), fontsize=8)
        if k == 0:
            ax.set_ylabel("synapses", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Integer delays per layer (best model of {Path(run).name}; used synapses only)",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(path))


# ------------------------------------------------------------------------------ curves
def plot_training_curves(run, path: Path) -> Path:
    run = Path(run)
    m = read_metrics(run)
    ep = [r["epoch"] for r in m]
    fig = _figure(11.0, 3.2)
    ax = fig.add_subplot(1, 3, 1)
    ax.plot(ep, [r["loss"] for r in m], "o-", ms=3)
    ax.set_title("training loss", fontsize=9)
    ax = fig.add_subplot(1, 3, 2)
    ax.plot(ep, [100 * r["train_acc"] for r in m], "o-", ms=3, label="train (training mode)")
    ax.plot(ep, [100 * r["valid_acc"] for r in m], "s-", ms=3, label="valid (discrete)")
    res = None
    if (run / "result.json").exists():
        res = json.loads((run / "result.json").read_text())
        ax.axhline(100 * res["test_accuracy"], color="crimson", ls="--", lw=1,
                   label=f"test {100 * res['test_accuracy']:.1f} % (epoch {res['best_epoch']})")
    ax.set_title("accuracy (%)", fontsize=9)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 3, 3)
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
    used = (cfg.get("model", {}).get("delays", "learned") == "learned"
            and cfg.get("train", {}).get("learn") != "weights")
    sig = [(r["epoch"], r["sigma"]) for r in m if r.get("sigma") is not None]
    if sig:
        ax.plot(*zip(*sig), "o-", ms=3, color="purple")
    ax.set_title("kernel σ (steps) during the epoch" if used and sig else
                 "σ: not used (delays not learned)", fontsize=9)
    for a in fig.axes:
        a.set_xlabel("epoch", fontsize=8)
        a.tick_params(labelsize=7)
        a.grid(alpha=0.3)
    fig.suptitle(f"Training of {run}", fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(path))


# ------------------------------------------------------------------------------ raster
def plot_raster(run, path: Path, sample: int = 0, net=None, ds=None) -> Path:
    run = Path(run)
    net = net if net is not None else float_network(run)
    ds = ds if ds is not None else run_test_data(run)
    if not 0 <= sample < len(ds):
        raise PlotError(f"--sample {sample}: the run's test set has {len(ds)} samples "
                        f"(0..{len(ds) - 1})")
    x = ds.samples[sample][None]
    res = simulate(net, x, record=True)
    panels = [("input (binned counts)", x[0] > 0)] + \
             [(f"{layer.name or f'hidden {k}'} spikes", s[0])
              for k, (layer, s) in enumerate(zip(net.layers, res.spikes))]
    fig = _figure(8.0, 1.7 * (len(panels) + 1) + 0.5)
    t = x.shape[1]
    for k, (title, s) in enumerate(panels):
        ax = fig.add_subplot(len(panels) + 1, 1, k + 1)
        tt, nn = np.nonzero(s)
        ax.scatter(tt, nn, s=3, marker="|", color="black", lw=0.8)
        ax.set_xlim(-0.5, t - 0.5)
        ax.set_ylim(-0.5, s.shape[1] - 0.5)
        ax.set_ylabel("unit", fontsize=7)
        ax.set_title(f"{title}: {int(s.sum())} events", fontsize=8)
        ax.tick_params(labelsize=6, labelbottom=False)
    ax = fig.add_subplot(len(panels) + 1, 1, len(panels) + 1)
    names = net.class_names or [str(c) for c in range(res.u.shape[2])]
    true, pred = int(ds.labels[sample]), int(res.predictions[0])
    for c in range(res.u.shape[2]):
        hi = c in (true, pred)
        ax.plot(res.u[0, :, c], lw=1.6 if hi else 0.6, color=None if hi else "0.75",
                label=(("true = predicted" if true == pred else
                        "true" if c == true else "predicted") + f": {names[c]}") if hi else None)
    ax.set_xlim(-0.5, t - 0.5)
    ax.set_xlabel(f"time step ({net.dt * 1000:g} ms)", fontsize=7)
    ax.set_ylabel("readout u", fontsize=7)
    ax.legend(fontsize=6, loc="upper left")
    ax.tick_params(labelsize=6)
    ok = "correct" if true == pred else "wrong"
    fig.suptitle(f"Test sample {sample} through the frozen network: true {names[true]}, "
                 f"predicted {names[pred]} ({ok})", fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(path))


# ------------------------------------------------------------------------------ verify
def verify_spikes(run, sample: int = 0, target: str = "loihi2", *, artifact=None) -> dict:
    """One test sample through the run's PyTorch model and through the chip's arithmetic.

    The PyTorch model is the one ``verify`` compares against (a trained run's discrete
    model on its exact float64 path, a fine-tuned run's hardware-exact model); the chip is
    the bit-accurate simulator on the run's deployment artifact for ``target`` (built the
    way ``export`` builds it if missing; or the folder ``artifact``). The chip's spikes are
    put on PyTorch's time axis (layer l's output of step t is Lava row t + l + 1), so
    equal spikes are equal entries. Returns a dict: ``pytorch`` / ``chip`` (per hidden
    layer a (T, n) bool array), ``u_pytorch`` / ``u_chip`` (readout membranes (T, C),
    the chip's descaled), ``label``, ``pred_pytorch``, ``pred_chip``, ``names``,
    ``artifact_hash``, ``kind`` (the run's kind), ``dt``.
    """
    sample = check_int(sample, "--sample", "the test sample of the spike raster", lo=0)
    r = open_run(run)
    if r.kind == "imported":
        raise PlotError(f"{run}: an imported NIR graph has no PyTorch model to compare "
                        f"with the chip; fine-tune it first (neurodelay finetune)")
    ds = run_test_data(r)
    if sample >= len(ds):
        raise PlotError(f"--sample {sample}: the run's test set has {len(ds)} samples "
                        f"(0..{len(ds) - 1})")
    art = load_artifact(artifact) if artifact is not None else \
        artifact_for(r, DeployOptions(target=target))
    qnet = art.qnet
    x = pad_batch([ds.samples[sample]])
    T, L = x.shape[1], len(qnet.layers)
    model = load_model(r)
    if r.kind == "trained":
        model.set_discrete_dtype(torch.float64)
    with torch.no_grad():
        u_pt, spk_pt = model(torch.from_numpy(x), discrete=True, record=True)
    res = bitsim.run(qnet, bitsim.quantize_input(qnet, x), n_steps=T + L, record=True,
                     stats=False)
    u_q = bitsim.align_to_float(res, T).astype(np.float64) * qnet.layers[-1].scale
    pt = [np.asarray(s.numpy()[0]).astype(bool) for s in spk_pt]
    chip = [res.spikes[k][0, bitsim.float_row(k, 0):bitsim.float_row(k, T)]
            for k in range(len(pt))]
    u_pt = np.asarray(u_pt.numpy(), np.float64)
    return dict(pytorch=pt, chip=chip, u_pytorch=u_pt[0], u_chip=u_q[0],
                label=int(ds.labels[sample]), pred_pytorch=int(readout_scores(u_pt)[0].argmax()),
                pred_chip=int(bitsim.readout_scores(u_q)[0].argmax()),
                names=list(r.class_names or [str(c) for c in range(u_q.shape[2])]),
                artifact_hash=art.hash, kind=r.kind, dt=float(r.config["data"]["dt"]))


def plot_verify_raster(run, path: Path, sample: int = 0, target: str = "loihi2", *,
                       artifact=None) -> Path:
    """The verify figure: one test sample, PyTorch against the chip, spike for spike.

    Per hidden layer, a spike raster with spikes of both models in black, spikes only
    PyTorch fired in blue and spikes only the chip fired in red (with their counts in the
    title); below, the readout membranes of the true and predicted classes (PyTorch
    solid, chip dashed). Data from :func:`verify_spikes` (same arguments). Returns the
    PNG's path.

    Examples:
        >>> from neurodelay.research.plots import plot_verify_raster
        >>> plot_verify_raster("runs/a", "runs/a/plots/verify.png")  # doctest: +SKIP
        PosixPath('runs/a/plots/verify.png')
    """
    d = verify_spikes(run, sample, target, artifact=artifact)
    n_layers = len(d["pytorch"])
    fig = _figure(8.0, 1.9 * (n_layers + 1) + 0.6)
    T = d["u_pytorch"].shape[0]
    total = {"both": 0, "pytorch": 0, "chip": 0}
    for k, (a, b) in enumerate(zip(d["pytorch"], d["chip"])):
        ax = fig.add_subplot(n_layers + 1, 1, k + 1)
        parts = (("both", a & b, "black", "both"), ("pytorch", a & ~b, "tab:blue",
                 "PyTorch only"), ("chip", ~a & b, "tab:red", "chip only"))
        for key, m, color, label in parts:
            tt, nn = np.nonzero(m)
            total[key] += len(tt)
            ax.scatter(tt, nn, s=30 if key != "both" else 8, marker="|", color=color,
                       lw=1.8 if key != "both" else 1.0, label=f"{label}: {len(tt)}")
        ax.set_xlim(-0.5, T - 0.5)
        ax.set_ylim(-0.5, a.shape[1] - 0.5)
        ax.set_ylabel("neuron", fontsize=7)
        ax.set_title(f"hidden layer {k}: {int(a.sum())} PyTorch spikes, "
                     f"{int(b.sum())} chip spikes", fontsize=8)
        ax.legend(fontsize=6, loc="upper right", markerscale=1.5)
        ax.tick_params(labelsize=6, labelbottom=False)
    ax = fig.add_subplot(n_layers + 1, 1, n_layers + 1)
    names, true = d["names"], d["label"]
    shown = sorted({true, d["pred_pytorch"], d["pred_chip"]})
    for i, c in enumerate(shown):
        color = f"C{i}"
        ax.plot(d["u_pytorch"][:, c], color=color, lw=1.4, label=f"PyTorch: {names[c]}")
        ax.plot(d["u_chip"][:, c], color=color, lw=1.0, ls="--", label=f"chip: {names[c]}")
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_xlabel(f"time step ({d['dt'] * 1000:g} ms)", fontsize=7)
    ax.set_ylabel("readout u", fontsize=7)
    ax.legend(fontsize=6, loc="upper left", ncol=2)
    ax.tick_params(labelsize=6)
    agree = "equal" if total["pytorch"] == total["chip"] == 0 else \
        f"{total['pytorch'] + total['chip']} differ"
    fig.suptitle(f"{Path(run).name} ({d['kind']}), test sample {sample} (true "
                 f"{names[true]}): PyTorch predicts {names[d['pred_pytorch']]}, the chip "
                 f"{names[d['pred_chip']]}; hidden spikes {agree}\nartifact "
                 f"{d['artifact_hash'][:16]}", fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path))


# ------------------------------------------------------------------------------ all
MAX_SYNAPSES = 16     # panels per row of kernels.png


def plot_run(run, *, sample: int = 0, synapses: int = 4, out_dir=None) -> list[Path]:
    """Write all figures of ``run`` into ``run/plots/`` (or ``out_dir``); returns the paths.

    ``sample`` (0 .. test samples - 1) and ``synapses`` (1 .. 16) are checked, and the
    run's files read, before any figure is written.
    """

    sample = check_int(sample, "--sample", "the test sample of the spike raster", lo=0)
    synapses = check_int(synapses, "--synapses", "the synapses per layer in the kernel "
                         "figure", lo=1, hi=MAX_SYNAPSES)
    run = Path(run)
    _require_model(run)
    out = Path(out_dir) if out_dir is not None else run / "plots"
    net = float_network(run)
    ds = run_test_data(run)
    if sample >= len(ds):
        raise PlotError(f"--sample {sample}: out of range; the run's test set has {len(ds)} "
                        f"samples (0..{len(ds) - 1})")
    read_metrics(run)
    return [plot_kernels(run, out / PLOT_FILES[0], synapses=synapses),
            plot_delay_histograms(run, out / PLOT_FILES[1], net=net),
            plot_training_curves(run, out / PLOT_FILES[2]),
            plot_raster(run, out / PLOT_FILES[3], sample=sample, net=net, ds=ds)]


__all__ = ["plot_run", "plot_kernels", "plot_delay_histograms", "plot_training_curves",
           "plot_raster", "plot_verify_raster", "verify_spikes", "gaussian_kernel",
           "PlotError"]
