"""Retrain the built-in tissue model from scratch, on this machine, and write its weights file.

    python scripts/tissue_model/retrain.py --root runs/retrain --out runs/retrain/tissue.npz

Four stages, as the shipped model was made (results/tissue-model/README.md):

1. the study's data (216 + 48 whole synthetic slides of every category, 1024 x 1024 at 4 um/px,
   in two batches of seeds: scripts/tissue_model/make_data.py) and the `deep` model trained on
   it for 6,000 steps with run_study.py's options, seed 1;
2. the same seeds rendered again by today's generator, which adds smudges and hairs on the
   glass (docs/synth.md), plus 216 more training slides (432 + 48), and the stage-1 model
   trained on them for ``--steps2`` more steps (``gigaseg train --init``);
3. the stage-2 model widened to 8-16-32-32 channels without changing its output (widen.py)
   and trained on the same data for ``--steps3`` more steps at a lower rate (0.0005);
4. the stage-3 model trained on the same data for ``--steps4`` more steps at 0.0003, seed 5.

Then it writes the weights file (ship.py, 6 bits per weight; the model balances its input's glass
to 250, ``UNetConfig.glass_white``, NOTE [Glass balance] in gigaseg/glass.py). Every stage is resumable: run the
same command again after a stop. On the 2-core Xeon stage 1 takes about 50 minutes (data and
training), stage 2 about 20 minutes of data and 0.3-0.5 s per step, stages 3 and 4 about 0.17 s
per step on one thread (on the 2-core EPYC; stage 4's 30,000 steps 67 minutes). Stages 1 and 2
reproduced the stage-2 model's held-out Dice to within the run-to-run noise of the CPU's
floating-point summation order; stage 3 as this script runs it has not been rerun end to end
(the shipped stage 3 widened the stage-2 weights file, float16, rather than its float32
checkpoint), and stage 4 started from the shipped stage-3 run's float32 checkpoint as this
script does. Note: stage 1's data are rendered by today's generator too, so its slides with
smudges or fibres differ from the study's (NOTE [Debris stream]); the rest are the same bits.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


CHANNELS3 = "8,16,32,32"
"""Stage 3 widens stage 2's model to these channels per level (widen.py)."""

STAGES = {
    1: {"steps": 6000, "lr": 0.003, "warmup": 20, "seed": 1, "val_every": 250},
    2: {"steps": 10000, "lr": 0.002, "warmup": 100, "seed": 2, "val_every": 500},
    3: {"steps": 15000, "lr": 0.0005, "warmup": 200, "seed": 4, "val_every": 1000},
    4: {"steps": 30000, "lr": 0.0003, "warmup": 200, "seed": 5, "val_every": 1000},
}
"""Each stage's training options, the shipped model's (with ``loss`` bce+dice, checkpoints every 50
steps, no jitter); ``--steps``, ``--steps2``, ``--steps3`` and ``--steps4`` replace the steps."""


def _train(run: Path, data: Path, stage: int, steps: int, init: Path | None) -> Path:
    """Train (or resume, or leave a finished) run of a stage on ``data``: stage 1 the `deep` model
    from scratch, later stages from ``init``."""
    from run_study import unet_config

    if (run / "checkpoint.pt").exists():
        cmd = [sys.executable, "-m", "gigaseg", "train", "--resume", str(run), "--no-progress"]
    else:
        options = {"data": str(data), **STAGES[stage], "steps": steps, "loss": "bce+dice", "ckpt_every": 50,
                   "jitter": "none"}
        options.update({"preset": unet_config("deep")} if init is None else {"init": str(init)})
        cfg = run.parent / f"{run.name}.json"
        cfg.write_text(json.dumps(options, indent=1))
        cmd = [sys.executable, "-m", "gigaseg", "train", "--config", str(cfg), "--out", str(run), "--no-progress"]
    finished = (run / "config.json").exists() and json.loads((run / "config.json").read_text()).get("finished")
    if not finished:
        subprocess.run(cmd, check=True)
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="work folder: the data store and the run go here")
    ap.add_argument("--out", required=True, help="the weights file to write (.npz)")
    ap.add_argument("--steps", type=int, default=STAGES[1]["steps"], help="stage 1 steps")
    ap.add_argument("--steps2", type=int, default=STAGES[2]["steps"], help="stage 2 steps")
    ap.add_argument("--steps3", type=int, default=STAGES[3]["steps"], help="stage 3 steps")
    ap.add_argument("--steps4", type=int, default=STAGES[4]["steps"], help="stage 4 steps")
    args = ap.parse_args(argv)

    import make_data
    import ship
    import widen

    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data-4"
    if not (data / "store.json").exists():
        make_data.main(["--mpp", "4", "--out", str(data), "--train", "72", "--val", "24"])
    from gigaseg.store import RegionStore

    if len(RegionStore(data).split("train")) < 216:
        make_data.main(["--mpp", "4", "--out", str(data), "--append", "--train", "144", "--val", "24"])
    run = _train(root / "deep-4", data, 1, args.steps, init=None)
    data2 = root / "data-4d"
    if not (data2 / "store.json").exists():
        make_data.main(["--mpp", "4", "--out", str(data2), "--train", "72", "--val", "24"])
    if len(RegionStore(data2).split("train")) < 216:
        make_data.main(["--mpp", "4", "--out", str(data2), "--append", "--train", "144", "--val", "24"])
    if len(RegionStore(data2).split("train")) < 432:
        make_data.main(["--mpp", "4", "--out", str(data2), "--append", "--train", "216", "--val", "0"])
    run = _train(root / "deep-4-debris", data2, 2, args.steps2, init=run / "checkpoint.pt")
    wide = root / "wide-init.pt"
    if not wide.exists():
        widen.main([str(run / "checkpoint.pt"), "--channels", CHANNELS3, "--out", str(wide)])
    run = _train(root / "deep-4-wide", data2, 3, args.steps3, init=wide)
    run = _train(root / "deep-4-wide-long", data2, 4, args.steps4, init=run / "checkpoint.pt")
    return ship.main([str(run), "--out", args.out])


if __name__ == "__main__":
    sys.exit(main())
