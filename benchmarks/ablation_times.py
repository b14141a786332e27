"""Compare the time two ablation studies spent training: the former code's and this code's.

    ./.venv/bin/python benchmarks/ablation_times.py FORMER_DIR NEW_DIR [NEW_DIR ...] \
        [--wall FORMER_S NEW_S [NEW_S ...]] [--command "..."] [--note "..."] [--out FILE.json]

Each DIR is an `neurodelay ablate --out DIR` folder (several NEW_DIRs: repetitions of
this code's study, each compared with the former one). For every run (DIR/<model>/seed<k>/)
the per-epoch ``seconds`` of its metrics.jsonl (training + validation of that epoch, what
the trainer measures) are summed; a run missing from either study, or with a different
number of epochs, is an error (the studies must be the same work). Prints a table and
writes a JSON record: per-run seconds, totals and the ratio new / former.

The issue that asked for this (#12) wants the study to take less than half its former
time; benchmarks/ablation_side_by_side.sh runs the studies side by side (one process
each, started together), so that load from other jobs falls on all of them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from neurodelay.fs import atomic_write  # noqa: E402
from neurodelay.runs import read_jsonl  # noqa: E402


def run_seconds(study: Path) -> dict[str, dict]:
    """{"<model>/seed<k>": {"seconds": total, "epochs": n}} for every run of a study."""
    out = {}
    for metrics in sorted(study.glob("*/seed*/metrics.jsonl")):
        rows = read_jsonl(metrics, "metrics file")
        name = f"{metrics.parent.parent.name}/{metrics.parent.name}"
        out[name] = {"seconds": round(sum(float(r["seconds"]) for r in rows), 2),
                     "epochs": len(rows)}
    if not out:
        raise SystemExit(f"error: no */seed*/metrics.jsonl under {study}: is it an "
                         f"`neurodelay ablate --out` folder?")
    return out


def compare(former: Path, new: Path, a: dict | None = None) -> dict:
    """Former vs new study; ``a``: the former's run_seconds if already read."""
    a, b = a if a is not None else run_seconds(former), run_seconds(new)
    if set(a) != set(b):
        raise SystemExit(f"error: the studies have different runs: only in {former}: "
                         f"{sorted(set(a) - set(b))}, only in {new}: {sorted(set(b) - set(a))}")
    diff = [k for k in a if a[k]["epochs"] != b[k]["epochs"]]
    if diff:
        raise SystemExit(f"error: runs with different epoch counts (unfinished?): {diff}")
    fa = sum(v["seconds"] for v in a.values())
    fb = sum(v["seconds"] for v in b.values())
    return {"former_s": {k: v["seconds"] for k, v in a.items()},
            "new_s": {k: v["seconds"] for k, v in b.items()},
            "epochs": {k: v["epochs"] for k, v in a.items()},
            "former_total_s": round(fa, 1), "new_total_s": round(fb, 1),
            "ratio_new_over_former": round(fb / fa, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("former", type=Path, help="ablation folder of the former code")
    ap.add_argument("new", type=Path, nargs="+",
                    help="ablation folder(s) of this code (repetitions)")
    ap.add_argument("--wall", nargs="+", type=float, metavar="S",
                    help="wall-clock seconds of each whole `ablate` command (former first, "
                         "then one per NEW_DIR), if timed")
    ap.add_argument("--command", help="the ablate command all of them ran (recorded)")
    ap.add_argument("--note", action="append", default=[], help="a note to record")
    ap.add_argument("--out", type=Path, help="write the JSON record here")
    args = ap.parse_args(argv)
    if args.wall and len(args.wall) != 1 + len(args.new):
        ap.error(f"--wall: expected {1 + len(args.new)} values (former, then one per "
                 f"NEW_DIR), got {len(args.wall)}")
    former_runs = run_seconds(args.former)
    reps = [compare(args.former, d, former_runs) for d in args.new]
    res = {"what": "sum of per-epoch training + validation seconds (metrics.jsonl "
                   "'seconds') of every ablation run",
           "command": args.command, "former_dir": str(args.former),
           "new_dirs": [str(d) for d in args.new], "notes": args.note,
           "former_s": reps[0]["former_s"], "epochs": reps[0]["epochs"],
           "former_total_s": reps[0]["former_total_s"],
           "new_s": [r["new_s"] for r in reps],
           "new_total_s": [r["new_total_s"] for r in reps],
           "ratio_new_over_former": [r["ratio_new_over_former"] for r in reps]}
    if args.wall:
        res["wall_s"] = {"former": args.wall[0], "new": args.wall[1:],
                         "ratio_new_over_former": [round(w / args.wall[0], 3)
                                                   for w in args.wall[1:]]}
    head = "".join(f" {'new' + str(i + 1) + ' s':>9s}" for i in range(len(reps)))
    print(f"{'run':28s} {'former s':>9s}{head}")
    for k, f in res["former_s"].items():
        print(f"{k:28s} {f:9.1f}" + "".join(f" {r['new_s'][k]:9.1f}" for r in reps))
    print(f"{'total':28s} {res['former_total_s']:9.1f}"
          + "".join(f" {t:9.1f}" for t in res["new_total_s"]))
    print("ratio new / former (epoch seconds): "
          + ", ".join(f"{r:.3f}" for r in res["ratio_new_over_former"]))
    if args.wall:
        print(f"wall clock: former {args.wall[0]:.0f} s, new "
              + ", ".join(f"{w:.0f}" for w in args.wall[1:]) + " s; ratio "
              + ", ".join(f"{r:.3f}" for r in res["wall_s"]["ratio_new_over_former"]))
    if args.out:
        atomic_write(args.out, json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
