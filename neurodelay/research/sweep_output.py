"""The bit-width sweep's outputs: markdown and CSV tables, accuracy and memory heatmaps,
and the files :func:`write_outputs` writes (sweep.csv, sweep.md, sweep.json, sweep.png).

They read the dict of :func:`neurodelay.research.sweep.sweep_network` (and
``sweep_bits``); everything here is re-exported by :mod:`neurodelay.research.sweep`.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from neurodelay.errors import SweepError
from neurodelay.fs import atomic_write

SWEEP_FILES = ("sweep.csv", "sweep.md", "sweep.json", "sweep.png")
MODE_TEXT = {
    "clip": "delays above the largest value b bits hold (2**b - 1, at most the target's "
            "max delay) are clipped to it; shorter delays stay exact",
    "coarse": "delays keep their range at a coarser time resolution: d -> k*floor(d/k + "
              "1/2) with k = ceil(largest delay / (2**b - 1)) steps, then clipped to the "
              "largest multiple of k within the target's max delay",
}
CSV_COLUMNS = ("delay_mode", "weight_bits", "delay_bits", "max_delay", "delay_step",
               "delays_changed", "largest_delay", "accuracy", "float_accuracy",
               "agreement_with_float", "synapses", "memory_bytes", "n_warnings", "error")


def _cell(result: dict, mode: str, w: int, b: int) -> dict:
    for c in result["cells"]:
        if c["mode"] == mode and c["weight_bits"] == w and c["delay_bits"] == b:
            return c
    raise KeyError((mode, w, b))


def _column(result: dict, mode: str, b: int) -> dict:
    for col in result["columns"]:
        if col["mode"] == mode and col["delay_bits"] == b:
            return col
    raise KeyError((mode, b))


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _kb(v) -> str:
    return "-" if v is None else f"{v / 1000:.2f} kB"


def _col_title(col: dict, sep: str = " ") -> str:
    """'6 (<=62)' / '3 (<=14, step 2)'; with sep="\n" one item per line (plot ticks)."""
    items = [f"<={col['max_delay']}"]
    if col["mode"] == "coarse":
        items.append(f"step {col['delay_step']}")
    if sep == " ":
        return f"{col['delay_bits']} ({', '.join(items)})"
    return sep.join([str(col["delay_bits"])] + items)


def format_markdown(result: dict) -> str:
    """The sweep as markdown: per delay mode a table (rows weight bits, columns delay
    bits, cells "accuracy / kB"), a float reference row, and the notes."""
    r = result
    head = f"{r['run']} " if r.get("run") else ""
    lines = [f"# Bit-width sweep {head}on target {r['target']}", "",
             f"{r['n']} test samples x {r['steps']} steps, bit-accurate simulator; float "
             f"network with its own delays (0..{r['network_max_delay']} steps): "
             f"{_pct(r['float_accuracy'])}; {r['synapses_float']} synapses (float).", ""]
    for mode in r["modes"]:
        lines += _mode_markdown(r, mode)
    ft = r.get("finetuned")
    if ft:
        lines += _finetuned_markdown(r)
    errors = [c for c in r["cells"] + (ft or []) if c["error"]]
    if errors:
        lines += ["Errors:", ""] + [f"- {c.get('mode', 'fine-tuned')}, {c['weight_bits']}-bit "
                                    f"weights, {c['delay_bits']}-bit delays: {c['error']}"
                                    for c in errors] + [""]
    lines += ["Notes:", ""] + [f"- {n}" for n in r["notes"]]
    lines.append(f"- kB = 1000 bytes; quantization calibrated on {r['calibration']}; the "
                 f"target's max delay is {r['target_max_delay']} steps")
    return "\n".join(lines) + "\n"


def _mode_markdown(r: dict, mode: str) -> list[str]:
    """The lines of one delay mode's table (post-training quantization)."""
    cols = [_column(r, mode, b) for b in r["delay_bits"]]
    lines = [f"## delay mode `{mode}`", "", MODE_TEXT[mode] + ".", "",
             "| weight bits \\ delay bits (max delay) | "
             + " | ".join(_col_title(c) for c in cols) + " |",
             "|---|" + "---:|" * len(cols),
             "| float (reference) | " + " | ".join(_pct(c["float_accuracy"]) for c in cols)
             + " |"]
    for w in r["weight_bits"]:
        cells = []
        for b in r["delay_bits"]:
            c = _cell(r, mode, w, b)
            cells.append("error" if c["error"] else
                         f"{_pct(c['accuracy'])} / {_kb(c['memory_bytes'])}")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    lines.append("| delays changed (synapses) | "
                 + " | ".join(str(c["delays_changed"]) for c in cols) + " |")
    lines.append("")
    return lines


def _finetuned_markdown(r: dict) -> list[str]:
    """The lines of the hardware-exact fine-tuned cells' table."""
    lines = [f"## hardware-exact fine-tuned ({r['finetune_epochs']} epochs per cell)", "",
             "Each cell is a `neurodelay finetune` run (its forward pass is the chip's "
             "integer arithmetic; delays reduced by the mode that was better on "
             "validation after post-training quantization). Cells: test accuracy / "
             "synaptic memory (delay mode).", "",
             "| weight bits \\ delay bits | "
             + " | ".join(str(b) for b in r["delay_bits"]) + " |",
             "|---|" + "---:|" * len(r["delay_bits"])]
    for w in r["weight_bits"]:
        row = []
        for b in r["delay_bits"]:
            c = _ft_cell(r, w, b)
            row.append("error" if c["error"] else
                       f"{_pct(c['accuracy'])} / {_kb(c['memory_bytes'])} "
                       f"({c['delay_mode']})")
        lines.append(f"| {w} | " + " | ".join(row) + " |")
    lines.append("")
    return lines


def format_csv(result: dict) -> str:
    """One row per cell (and per float reference cell, weight_bits "float")."""
    rows = [",".join(CSV_COLUMNS)]

    def fmt(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.6g}"
        s = str(v)
        return '"' + s.replace('"', '""') + '"' if any(ch in s for ch in ',"\n') else s

    for mode in result["modes"]:
        for b in result["delay_bits"]:
            col = _column(result, mode, b)
            base = {**col, "delay_mode": mode}
            rows.append(",".join(fmt(v) for v in (
                {**base, "weight_bits": "float", "accuracy": col["float_accuracy"],
                 "agreement_with_float": 1.0}.get(k) for k in CSV_COLUMNS)))
            for w in result["weight_bits"]:
                c = {**base, **_cell(result, mode, w, b), "float_accuracy": col["float_accuracy"]}
                rows.append(",".join(fmt(c.get(k)) for k in CSV_COLUMNS))
    return "\n".join(rows) + "\n"


def _ft_cell(result: dict, w: int, b: int) -> dict:
    for c in result["finetuned"]:
        if c["weight_bits"] == w and c["delay_bits"] == b:
            return c
    raise KeyError((w, b))


def _grid(result: dict, mode: str, key: str) -> np.ndarray:
    """(1 + len(weight bits), len(delay bits)) values; row 0 is the float reference
    (mode "finetuned": the fine-tuned cells, row 0 the float network's own accuracy)."""
    wb, db = result["weight_bits"], result["delay_bits"]
    g = np.full((1 + len(wb), len(db)), np.nan)
    for j, b in enumerate(db):
        if key == "accuracy":
            g[0, j] = 100 * (result["float_accuracy"] if mode == "finetuned"
                             else _column(result, mode, b)["float_accuracy"])
        for i, w in enumerate(wb):
            c = _ft_cell(result, w, b) if mode == "finetuned" else _cell(result, mode, w, b)
            v = c[key]
            if v is not None:
                g[1 + i, j] = 100 * v if key == "accuracy" else v / 1000
    return g


def _heatmap(ax, grid: np.ndarray, rows, cols, cmap_name: str, fmt: str, title: str,
             vmin=None, vmax=None) -> None:
    import matplotlib  # lazy: matplotlib only for figures

    cmap = matplotlib.colormaps[cmap_name].with_extremes(bad="#dddddd")
    data = np.ma.masked_invalid(grid)
    im = ax.imshow(data, cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    lo = np.nanmin(grid) if vmin is None and np.isfinite(grid).any() else (vmin or 0.0)
    hi = np.nanmax(grid) if vmax is None and np.isfinite(grid).any() else (vmax or 1.0)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid[i, j]
            if np.isfinite(v):
                frac = (v - lo) / (hi - lo) if hi > lo else 0.5
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                        color="black" if frac > 0.55 else "white")
            else:
                ax.text(j, i, "-", ha="center", va="center", fontsize=8, color="#555555")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("delay bits (max delay)")
    ax.set_ylabel("weight bits")
    ax.set_title(title, fontsize=10)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)


def plot_sweep(result: dict, path) -> Path:
    """Heatmaps of accuracy (%) and synaptic memory (kB), one row of two per delay mode."""
    from matplotlib.figure import Figure  # lazy: matplotlib only for figures

    modes = list(result["modes"]) + (["finetuned"] if result.get("finetuned") else [])
    rows = ["float"] + [str(w) for w in result["weight_bits"]]
    fig = Figure(figsize=(11.0, (0.42 * len(rows) + 1.6) * len(modes) + 0.4), dpi=110)
    axes = fig.subplots(len(modes), 2, squeeze=False)
    for k, mode in enumerate(modes):
        cols = ([str(b) for b in result["delay_bits"]] if mode == "finetuned" else
                [_col_title(_column(result, mode, b), "\n") for b in result["delay_bits"]])
        what = ("hardware-exact fine-tuned" if mode == "finetuned"
                else f"post-training, delay mode '{mode}'")
        _heatmap(axes[k, 0], _grid(result, mode, "accuracy"), rows, cols, "viridis",
                 "{:.1f}", f"accuracy (%), {what}", vmin=0.0, vmax=100.0)
        _heatmap(axes[k, 1], _grid(result, mode, "memory_bytes"), rows, cols, "cividis",
                 "{:.2f}", f"synaptic memory (kB), {what}")
    fig.suptitle(f"bit-width sweep on {result['target']}: {result['n']} test samples; float "
                 f"accuracy {100 * result['float_accuracy']:.1f} %", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    atomic_write(path, buf.getvalue())
    return path


def write_outputs(result: dict, out_dir) -> list[Path]:
    """Write sweep.csv, sweep.md, sweep.json, sweep.png into out_dir (atomically)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} exists and is not a folder; choose a folder")
    files = [out / name for name in SWEEP_FILES]
    atomic_write(files[0], format_csv(result))
    atomic_write(files[1], format_markdown(result))
    atomic_write(files[2], json.dumps(result, indent=2) + "\n")
    plot_sweep(result, files[3])
    return files

