"""Retrain the built-in tissue model from scratch, on this machine, and write its weights file.

    python scripts/tissue_model/retrain.py --root runs/retrain --out runs/retrain/tissue.npz

Makes the training data exactly as the study did (216 + 48 whole synthetic slides of every
category, 1024 x 1024 at 4 um/px, in two batches of seeds: scripts/tissue_model/make_data.py),
trains the `deep` model for 6,000 steps with the shipped model's options (run_study.py's, seed 1)
and writes the weights file (ship.py). Every stage is resumable: run the same command again
after a stop. On the 2-core Xeon the data take about 10 minutes and the training about 40.
It reproduces the shipped model's held-out Dice to within the run-to-run noise of the CPU's
floating-point summation order (the same seeds, data and steps; results/tissue-model/).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="work folder: the data store and the run go here")
    ap.add_argument("--out", required=True, help="the weights file to write (.npz)")
    ap.add_argument("--steps", type=int, default=6000)
    args = ap.parse_args(argv)

    import make_data
    import ship
    from run_study import unet_config

    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data-4"
    if not (data / "store.json").exists():
        make_data.main(["--mpp", "4", "--out", str(data), "--train", "72", "--val", "24"])
    from gigaseg.store import RegionStore

    if len(RegionStore(data).split("train")) < 216:
        make_data.main(["--mpp", "4", "--out", str(data), "--append", "--train", "144", "--val", "24"])
    run = root / "deep-4"
    if (run / "checkpoint.pt").exists():
        cmd = [sys.executable, "-m", "gigaseg", "train", "--resume", str(run), "--no-progress"]
    else:
        cfg = root / "deep-4.json"
        cfg.write_text(json.dumps({
            "data": str(data), "preset": unet_config("deep"), "steps": args.steps, "lr": 0.003, "warmup": 20,
            "loss": "bce+dice", "seed": 1, "val_every": 250, "ckpt_every": 50, "jitter": "none"}, indent=1))
        cmd = [sys.executable, "-m", "gigaseg", "train", "--config", str(cfg), "--out", str(run), "--no-progress"]
    finished = (run / "config.json").exists() and json.loads((run / "config.json").read_text()).get("finished")
    if not finished:
        subprocess.run(cmd, check=True)
    return ship.main([str(run), "--out", args.out])


if __name__ == "__main__":
    sys.exit(main())
