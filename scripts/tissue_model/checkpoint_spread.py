"""How much the real-slide scores move from checkpoint to checkpoint of one run.

    python scripts/tissue_model/checkpoint_spread.py runs/RUN/checkpoints/step-*.pt --out spread.json

(the checkpoints ``gigaseg train --keep-every 1000`` keeps, or any others).

Each checkpoint (or weights file) is scored on the shared real slides exactly as
``scripts/real_slides_eval.py`` scores its model (``evaluate.real_scores``: the slide through
``predict_slide``, Dice against ``../shared/data/real/masks/*.reference.png``). Prints one line per
checkpoint, then per run the lowest, highest and mean Dice of each slide. A run is the folder a
checkpoint is in, without a trailing ``-snap`` (``runs/stage4-snap/step-30000.pt``: run
``stage4``, checkpoint ``step-30000.pt``), or the run folder above ``checkpoints/``. With
``--out`` the scores go to a JSON file, written atomically. With ``--orientations`` each slide is
also scored in each of its eight orientations, turned or mirrored with its reference
(``real_slides_eval.py``'s orientation study), and the mean of those eight, a firmer measure than
the slide as scanned, is spread per run too (as "<slide> orientation mean"), with the Dice of the
mean over the eight orientations ("<slide> mean of 8", ``gigaseg predict --orientations 8``).

Why: kidney-48-5's score is set by one smear that a checkpoint calls tissue or not, so it moves
by 0.1-0.15 between checkpoints 1,000 steps apart (results/tissue-model/README.md, "Stage 7").
Comparing two runs by one checkpoint each compares their noise; compare their spreads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def run_name(path: Path) -> str:
    """The run a checkpoint belongs to: its folder's name without a trailing ``-snap``, or for a
    checkpoint kept by ``gigaseg train --keep-every`` (RUN/checkpoints/step-N.pt) the run's."""
    folder = path.resolve().parent
    if folder.name == "checkpoints":
        return folder.parent.name
    return folder.name[: -len("-snap")] if folder.name.endswith("-snap") else folder.name


def spread(rows: list[dict], slides: list[str]) -> dict:
    """Per run and slide: the lowest, highest and mean Dice over its checkpoints."""
    out: dict = {}
    for row in rows:
        for slide in slides:
            out.setdefault(row["run"], {}).setdefault(slide, []).append(row[slide])
    return {run: {slide: {"min": min(v), "max": max(v), "mean": sum(v) / len(v), "n": len(v)}
                  for slide, v in per.items()} for run, per in out.items()}


def orientation_scores(checkpoint: Path, data: Path) -> dict:
    """Per real slide: the Dice in each of its eight orientations, their mean, and the Dice of the
    mean over the eight (``real_slides_eval.orientation_study``)."""
    import tempfile

    import evaluate

    sys.path.insert(0, str(HERE.parent))
    from real_slides_eval import orientation_study

    from gigaseg.checkpoint import load_model
    from gigaseg.predict import predict_slide

    pair = load_model(str(checkpoint))

    def run(method, path, od, mpp, orientations=1):
        return predict_slide(pair, path, od, mpp=mpp, progress=False, overwrite=True, orientations=orientations)

    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="gigaseg-orient-") as tmp:
        for name, rel, mpp in evaluate.REAL_SLIDES:
            study = orientation_study(run, name, data / rel, mpp, data / "masks" / f"{name}.reference.png",
                                      Path(tmp) / name)
            out[f"{name} orientations"] = study["each"]
            out[f"{name} orientation mean"] = study["each_mean"]
            out[f"{name} mean of 8"] = study["mean_of"]["8"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="checkpoints (.pt) or weights files (.npz) to score")
    ap.add_argument("--data", default=None, help="the real-slide folder (default: ../shared/data/real)")
    ap.add_argument("--out", default=None, help="write the scores here as JSON")
    ap.add_argument("--orientations", action="store_true",
                    help="also score each slide in its eight orientations and their mean (about 30 s per checkpoint)")
    args = ap.parse_args(argv)

    import evaluate

    from gigaseg._atomic import write_text_atomic

    data = Path(args.data) if args.data else evaluate.REAL
    missing = [name for name, _, _ in evaluate.REAL_SLIDES if not (data / "masks" / f"{name}.reference.png").exists()]
    if missing:
        raise SystemExit(f"{data}: no reference mask for {', '.join(missing)}; give --data the folder that holds "
                         "slides/ and masks/*.reference.png (../shared/data/real)")
    paths = [Path(p) for p in args.checkpoints]
    for p in paths:
        if not p.is_file():
            raise SystemExit(f"{p}: no such checkpoint")
    slides = [name for name, _, _ in evaluate.REAL_SLIDES]
    rows = []
    for p in paths:
        real = evaluate.real_scores(str(p), data, baselines=False)
        row = {"run": run_name(p), "checkpoint": p.name, **{s: real[s]["model"]["dice"] for s in slides}}
        if args.orientations:
            row.update(orientation_scores(p, data))
        rows.append(row)
        print(f"{row['run']}/{row['checkpoint']}: " + ", ".join(f"{s} {row[s]:.4f}" for s in slides), flush=True)
    turned = ("orientation mean", "mean of 8") if args.orientations else ()
    keys = slides + [f"{s} {k}" for s in slides for k in turned]
    summary = spread(rows, keys)
    for run, per in summary.items():
        print(f"{run}: " + "; ".join(f"{s} {v['min']:.3f}-{v['max']:.3f} (mean {v['mean']:.3f}, {v['n']})"
                                     for s, v in per.items()))
    if args.out:
        doc = {"what": "real-slide Dice of each checkpoint, scored as scripts/real_slides_eval.py scores its model",
               "command": "python scripts/tissue_model/checkpoint_spread.py " + " ".join(args.checkpoints),
               "snapshots": rows, "spread": summary}
        write_text_atomic(args.out, json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
