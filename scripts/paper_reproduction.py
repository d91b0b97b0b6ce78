"""The paper's experiment, reproduced: the `paper` U-Net trained on whole 16000 x 64000 regions.

    python scripts/paper_reproduction.py                  # prepare the data (once), train or resume, finalize
    python scripts/paper_reproduction.py --steps 800      # extend the run (the cosine schedule stretches)
    python scripts/paper_reproduction.py --finalize       # only (re)write results/paper-reproduction/

The paper trained its 4,492-parameter U-Net on whole 16000 x 64000 areas of H&E slides, batch
size 1 (81 s per step on a 128 GB Apple M1 Ultra, 111 hours, held-out Dice 0.989 +/- 0.005).
This script does the same on synthetic regions with exact masks (``gigaseg.synth``): --train
regions for training and --val held-out ones (other seeds), one whole region per step with the
exact tiled engine, validation on the whole held-out regions every --val-every steps.

Resolution: 1.0 um/px by default, where a 16000 x 64000 region is 16 x 64 mm, about the tissue
area of a whole slide (the paper does not state its resolution; whole areas of that size at a
slide's base resolution would be a fraction of a slide). In calibration runs on 16 MP regions
(runs of 300 steps, same recipe) the model's 255-pixel receptive field learned faint tissue
edges and adipose tissue much better at 1.0 than at 0.5 um/px.

On a CPU it runs for hours to days. Stop it at any time (Ctrl-C, SIGTERM): it checkpoints the
last completed step, and the same command resumes it exactly. Scratch data lives in --work
(default runs/paper/: the region store, about 4 GB per region in npy, and the run folder).
After the last step, or with --finalize at any time, it writes the evidence into --results
(default results/paper-reproduction/): log.csv, val.csv, curves.png, config.json, checkpoint.pt,
metrics.json (held-out Dice, steps, compute time, seconds per step, peak memory, the machine,
the paper's figures beside ours) and COMMAND.md (how to reproduce it).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The paper's figures (batch size 1, 16000 x 64000 areas).
PAPER = {
    "hardware": "Apple M1 Ultra, 128 GB unified memory (GPU)",
    "memory": "> 100 GB",
    "seconds_per_step": 81,
    "wall_hours": 111.4,  # 111 h 24 min
    "steps": 4940,
    "held_out_dice_mean": 0.989,
    "held_out_dice_sd": 0.005,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(ROOT / "runs" / "paper"), help="scratch folder: regions/ and run/")
    p.add_argument("--results", default=str(ROOT / "results" / "paper-reproduction"), help="the evidence folder")
    p.add_argument("--steps", type=int, default=600, help="total optimizer steps of the run")
    p.add_argument("--lr", type=float, default=0.001,
                   help="Adam's peak learning rate (a new run only); 0.003 collapsed the model on whole regions")
    p.add_argument("--warmup", type=int, default=20, help="linear warm-up steps (a new run only)")
    p.add_argument("--val-every", type=int, default=20, help="validate on the held-out regions every K steps")
    p.add_argument("--ckpt-every", type=int, default=5, help="checkpoint every K steps")
    p.add_argument("--train", type=int, default=8, help="training regions (a new store only)")
    p.add_argument("--val", type=int, default=4, help="held-out regions (a new store only)")
    p.add_argument("--size", default="16000x64000", help="region HEIGHTxWIDTH (a new store only)")
    p.add_argument("--mpp", type=float, default=1.0,
                   help="resolution of the synthetic regions, um/px (a new store only); see the module docstring")
    p.add_argument("--seed", type=int, default=1000, help="seed of the first region (a new store only)")
    p.add_argument("--holes", default="background", choices=("background", "tissue"),
                   help="what the masks call lumens and tears inside tissue (a new store only; NOTE [Hole "
                        "convention] in gigaseg/synth.py); use another --work for the other convention")
    p.add_argument("--memory-budget", default=None, help="the engine's memory budget, e.g. 2GB")
    p.add_argument("--device", default="auto")
    p.add_argument("--target", type=float, default=PAPER["held_out_dice_mean"], help="held-out Dice to reach")
    p.add_argument("--finalize", action="store_true", help="only write the results folder from the run")
    p.add_argument("--no-progress", action="store_true")
    return p


def prepare(work: Path, args) -> Path:
    """The region store in ``work``/regions, made once (a partial one is completed)."""
    from gigaseg.prepare import parse_size, prepare_synthetic
    from gigaseg.store import RegionStore

    path = work / "regions"
    w, h = parse_size(args.size)
    n = args.train + args.val
    store = RegionStore.create(path, exist_ok=True)
    if len(store) < n:
        if len(store):
            print(f"paper_reproduction: {path} holds {len(store)} of {n} regions; making them again", file=sys.stderr)
            for name in store.names():
                store.remove(name)
        print(f"paper_reproduction: writing {n} synthetic {h} x {w} regions into {path}", file=sys.stderr)
        prepare_synthetic(store, n, (w, h), seed=args.seed, val=args.val, mpp=args.mpp,
                          progress=not args.no_progress, holes=args.holes)
    held = {r.meta.get("mask_source", {}).get("holes", "background") for r in store.regions}
    if held != {args.holes}:
        raise SystemExit(f"paper_reproduction: the regions in {path} have hole convention {sorted(held)}, not "
                         f"--holes {args.holes}; give another --work for a run with the other convention")
    return path


def run(work: Path, data: Path, args) -> dict:
    from gigaseg.training import TrainConfig, resume_config, train

    run_dir = work / "run"
    if (run_dir / "checkpoint.pt").exists():
        config = resume_config(run_dir, steps=args.steps, val_every=args.val_every, ckpt_every=args.ckpt_every,
                               memory_budget=args.memory_budget, device=args.device,
                               progress=not args.no_progress)
    else:
        config = TrainConfig(data=str(data), out=str(run_dir), preset="paper", steps=args.steps, lr=args.lr,
                             warmup=args.warmup, val_every=args.val_every, ckpt_every=args.ckpt_every,
                             memory_budget=args.memory_budget, device=args.device, progress=not args.no_progress)
    return train(config)


def metrics(run_dir: Path, target: float) -> dict:
    """The run's figures, from its log.csv, val.csv and config.json."""
    from gigaseg.checkpoint import load_checkpoint
    from gigaseg.training import _mean_sd, _num, _read_csv

    log, val = _read_csv(run_dir / "log.csv"), _read_csv(run_dir / "val.csv")
    info = json.loads((run_dir / "config.json").read_text())
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    def column(name: str) -> list[float]:
        return [v for v in (_num(r.get(name)) for r in log) if math.isfinite(v)]

    step_s, val_s, peaks = column("seconds_per_step"), column("val_seconds"), column("peak_anon_bytes")
    by_step: dict[int, list[float]] = {}
    for r in val:
        by_step.setdefault(int(r["step"]), []).append(float(r["dice"]))
    # the sample sd, as in the training log and gigaseg evaluate
    curve = [{"step": s, **dict(zip(("dice_mean", "dice_sd"), _mean_sd(d))), "per_region": d}
             for s, d in sorted(by_step.items())]
    last = curve[-1] if curve else None
    best = max(curve, key=lambda c: c["dice_mean"]) if curve else None
    first = next((c["step"] for c in curve if c["dice_mean"] >= target), None)
    regions = [r["region"] for r in val if int(r["step"]) == last["step"]] if last else []
    compute = sum(step_s) + sum(val_s)
    return {
        "complete": int(ckpt["step"]) >= int(info["config"]["steps"]),
        "steps": int(ckpt["step"]),
        "steps_planned": int(info["config"]["steps"]),
        "held_out_dice_mean": last["dice_mean"] if last else None,
        "held_out_dice_sd": last["dice_sd"] if last else None,
        "held_out_dice": dict(zip(regions, last["per_region"])) if last else {},
        "held_out_at_step": last["step"] if last else None,
        "best_held_out_dice_mean": best["dice_mean"] if best else None,
        "best_at_step": best["step"] if best else None,
        "target": target,
        "target_reached_at_step": first,
        "seconds_per_step_median": statistics.median(step_s) if step_s else None,
        "training_seconds": sum(step_s),
        "validation_seconds": sum(val_s),
        "compute_hours": compute / 3600,
        "peak_anon_bytes": int(max(peaks)) if peaks else None,
        "sessions": 1 + len(info.get("resumes") or []),
        "train_regions": info.get("train_regions"),
        "val_regions": info.get("val_regions"),
        "mpp": info.get("mpp"),
        "holes": _hole_convention(info),
        "model": info.get("model"),
        "parameters": info.get("parameters"),
        "train_config": info.get("config"),
        "machine": info.get("machine"),
        "device": info.get("device"),
        "torch_version": info.get("torch_version"),
        "gigaseg_version": info.get("gigaseg_version"),
        "validation_curve": [{k: c[k] for k in ("step", "dice_mean", "dice_sd")} for c in curve],
        "paper": PAPER,
    }


def _hole_convention(info: dict) -> str | None:
    """The masks' hole convention of the run's store ("background" for stores made before the
    option), or None when the store is not there."""
    from gigaseg.store import RegionStore

    try:
        regions = RegionStore(info["config"]["data"]).regions
    except Exception:  # noqa: BLE001 - the evidence is written without it
        return None
    return regions[0].meta.get("mask_source", {}).get("holes", "background") if regions else None


def finalize(work: Path, results: Path, args) -> dict:
    """Copy the run's evidence into ``results`` and write metrics.json and COMMAND.md."""
    from gigaseg._atomic import atomic_write, write_json_atomic

    run_dir = work / "run"
    if not (run_dir / "checkpoint.pt").exists():
        raise SystemExit(f"paper_reproduction: no run in {run_dir} yet; run this script without --finalize first")
    results.mkdir(parents=True, exist_ok=True)
    for name in ("log.csv", "val.csv", "curves.png", "config.json", "checkpoint.pt"):
        src = run_dir / name
        if src.exists():
            with atomic_write(results / name, "wb") as f:
                f.write(src.read_bytes())
    m = metrics(run_dir, args.target)
    write_json_atomic(results / "metrics.json", m)
    status = ("complete" if m["complete"] else
              f"in progress: step {m['steps']} of {m['steps_planned']}; run the command below to continue")
    command = f"""# Reproducing results/paper-reproduction/

Status: {status}.

```bash
make test                                   # creates .venv with the project installed
.venv/bin/python scripts/paper_reproduction.py --steps {m['steps_planned']}
```

It writes {len(m['train_regions'] or [])} training and {len(m['val_regions'] or [])} held-out synthetic regions
of {args.size} pixels at {m['mpp']} um/px (seeds {args.seed} on) into runs/paper/regions/, trains the
`paper` preset ({m['parameters']} parameters) one whole region per step (batch size 1), validates on the
whole held-out regions every {m['train_config']['val_every']} steps, and copies the evidence here. Stop it at
any time (Ctrl-C or SIGTERM); the same command resumes it where it stopped (bit for bit on a CPU).
It has run in {m['sessions']} process(es) so far (each resume starts one); the step count, the learning rate and the schedule are in
config.json (`config`), and every resume in its `resumes`.
"""  # noqa: E501 - COMMAND.md's text, kept as written
    with atomic_write(results / "COMMAND.md", "w") as f:
        f.write(command)
    return m


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    work, results = Path(args.work), Path(args.results)
    if not args.finalize:
        data = prepare(work, args)
        t0 = time.time()
        try:
            run(work, data, args)
        except KeyboardInterrupt:
            print(f"paper_reproduction: stopped after {time.time() - t0:.0f} s; run the same command to resume",
                  file=sys.stderr)
            finalize(work, results, args)
            return 130
    m = finalize(work, results, args)
    print(json.dumps({k: m[k] for k in ("steps", "held_out_dice_mean", "held_out_dice_sd", "target_reached_at_step",
                                        "seconds_per_step_median", "compute_hours", "peak_anon_bytes")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
