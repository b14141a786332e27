"""Make the figures of the docs site (docs/img/) with neurodelay's own functions.

    ./.venv/bin/python docs/make_figures.py [--work DIR] [--threads N]

trains a small model on the embedded task (make_synthetic, 1,000 training samples, 2 x 32
hidden, 8 epochs: about a minute on one core), fine-tunes it to 4-bit weights, and draws:

* ``pipeline.svg``            the train -> artifact -> verify chain (README and index)
* ``training_curves.png``     neurodelay.research.plots.plot_training_curves
* ``delay_histograms.png``    neurodelay.research.plots.plot_delay_histograms
* ``kernels.png``             neurodelay.research.plots.plot_kernels
* ``verify_raster.png``       plot_verify_raster: PyTorch vs chip (8-bit artifact)
* ``verify_raster_4bit.png``  plot_verify_raster: the fine-tuned 4-bit run (equal spikes)
* ``sweep_tiny.png``          neurodelay.research.sweep.sweep_bits on the small model
* ``sshd_ablation.png``, ``sshd_sweep.png``  copied from benchmarks/results/ (drawn by
  ``neurodelay report`` and ``neurodelay sweep-bits`` in scripts/sshd_experiments.sh)

The figures are committed; rerun this script after a change that alters them.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMG = HERE / "img"
RESULTS = HERE.parent / "benchmarks" / "results"


def pipeline_svg(path: Path) -> Path:
    """The chain a run goes through, drawn with matplotlib (no pyplot)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig = Figure(figsize=(9.6, 2.9))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 9.6)
    ax.set_ylim(0, 2.9)
    ax.axis("off")
    boxes = [
        (0.15, "data", "SHD / SSC file\n(any SHD-layout\nHDF5, or NIR graph)", "#e8eef7"),
        (2.05, "train", "DCLS: weight +\nlearned delay per\nsynapse (PyTorch)", "#e3f1e6"),
        (3.95, "export", "quantize once\n(training data)\n-> one artifact", "#fbeede"),
        (5.85, "verify", "PyTorch vs bit-accurate\nsim vs Lava on the\nnetx file, spike for spike", "#f6e3e8"),
        (7.75, "Loihi 2", "netx file,\nNIR graphs,\nhash-checked", "#eee8f5"),
    ]
    w, h, y = 1.7, 1.55, 0.85
    for x, title, text, color in boxes:
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                    fc=color, ec="0.35", lw=1.0))
        ax.text(x + w / 2, y + h - 0.25, title, ha="center", va="center", fontsize=11,
                weight="bold")
        ax.text(x + w / 2, y + h / 2 - 0.2, text, ha="center", va="center", fontsize=8)
    for (x0, *_), (x1, *_) in zip(boxes, boxes[1:]):
        ax.add_patch(FancyArrowPatch((x0 + w + 0.02, y + h / 2), (x1 - 0.02, y + h / 2),
                                     arrowstyle="-|>", mutation_scale=14, color="0.3"))
    ax.annotate("", xy=(2.05 + w / 2, y - 0.02), xytext=(5.85 + w / 2, y - 0.02),
                arrowprops=dict(arrowstyle="-|>", color="tab:red", lw=1.1,
                                connectionstyle="arc3,rad=-0.25"))
    ax.text(4.8, 0.2, "finetune: train the chip's own integer arithmetic (PyTorch == chip)",
            ha="center", fontsize=8, color="tab:red")
    ax.text(4.8, 2.72, "neurodelay train  ->  neurodelay export  ->  neurodelay verify",
            ha="center", fontsize=9, family="monospace", color="0.25")
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "neurodelay"}):   # the same file every time
        fig.savefig(path, format="svg", metadata={"Date": None})
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", help="folder for the runs (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    IMG.mkdir(exist_ok=True)
    print(pipeline_svg(IMG / "pipeline.svg"))

    from neurodelay import api
    from neurodelay.data import make_synthetic
    from neurodelay.research import plots
    from neurodelay.research.sweep import sweep_bits
    from neurodelay.train.finetune import FinetuneConfig, finetune

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="nd-figures-"))
    files = make_synthetic(work / "data", sizes={"train": 1000, "valid": 200, "test": 200})
    run = work / "run"
    if not (run / "result.json").exists():
        api.train_run(run, overwrite=True, preset="tiny", hidden=[32, 32], epochs=8,
                      batch_size=64, seed=0, train_file=str(files["train"]),
                      valid_file=str(files["valid"]), test_file=str(files["test"]),
                      cache_dir=str(work / "cache"), threads=a.threads, progress=False)
    run4 = work / "run4"
    if not (run4 / "result.json").exists():
        finetune(run, run4, FinetuneConfig(weight_bits=4, delay_bits=5, epochs=3),
                 overwrite=True, progress=False, threads=a.threads)
    for p in (plots.plot_training_curves(run, IMG / "training_curves.png"),
              plots.plot_delay_histograms(run, IMG / "delay_histograms.png"),
              plots.plot_kernels(run, IMG / "kernels.png", synapses=4),
              plots.plot_verify_raster(run, IMG / "verify_raster.png", sample=0),
              plots.plot_verify_raster(run4, IMG / "verify_raster_4bit.png", sample=0)):
        print(p)
    res = sweep_bits(run, weight_bits="8,4,3,2", delay_bits="6,5,4,3", delay_mode="both",
                     out_dir=work / "sweep", progress=False, threads=a.threads)
    print(shutil.copyfile(work / "sweep" / "sweep.png", IMG / "sweep_tiny.png"))
    print(f"(sweep float accuracy {res['float_accuracy']:.3f})")
    for name in ("sshd_ablation.png", "sshd_sweep.png"):
        print(shutil.copyfile(RESULTS / name, IMG / name))


if __name__ == "__main__":
    main()
