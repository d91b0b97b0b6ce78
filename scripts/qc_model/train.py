"""Train the quality-control model on the store of make_data.py (results/qc-model/README.md).

    python scripts/qc_model/train.py --data runs/qc/data --out runs/qc/run --steps 1200

Writes the run's options to OUT.json and runs ``gigaseg train --config OUT.json --out OUT``:
the study's ``wide`` U-Net (scripts/tissue_model/run_study.py: the paper model's geometry with
three times the channels, input centred on glass) with six output channels, one per class of
the store (their names come from the store), ``ce+dice`` (``--loss``), Adam at 0.003 with a 20-step warm-up
and cosine decay, flips and rotations, no colour jitter, validation on the held-out slides.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main(argv=None) -> int:
    from gigaseg.options import UNetConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the store of make_data.py")
    ap.add_argument("--out", required=True, help="the run folder (new)")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--val-every", type=int, default=200)
    ap.add_argument("--loss", default="ce+dice", choices=("ce", "dice", "ce+dice"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    config = {
        "data": str(Path(args.data).resolve()),
        "preset": UNetConfig(channels=(6, 12, 24), input_shift=0.8, input_scale=4.0).to_dict(),
        "steps": args.steps, "lr": args.lr, "warmup": 20, "loss": args.loss, "seed": 0,
        "val_every": args.val_every, "ckpt_every": 50, "jitter": "none",
    }
    cfg = out.with_name(out.name + ".json")
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps(config, indent=1) + "\n")
    cmd = [sys.executable, "-m", "gigaseg", "train", "--config", str(cfg), "--out", str(out), "--no-progress"]
    print(" ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
