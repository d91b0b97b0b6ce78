"""Train the tissue-model study's runs, one after another; resumable (results/tissue-model/README.md).

    python scripts/tissue_model/run_study.py --root runs/tissue-model --runs paper-4,wide-4 --steps 800

Each run NAME = ARCH-MPP trains architecture ARCH (``ARCHS``) on ROOT/data-MPP
(scripts/tissue_model/make_data.py) into ROOT/NAME with ``gigaseg train``. A run whose folder
holds a checkpoint is resumed (``gigaseg train --resume``), so the same command, run again after
a stop, continues the study where it stopped; a finished run is skipped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

#: Every study model normalizes its input, centred on glass: on raw RGB / 255 the paper model stays
#: at Dice ~0 on these slides for hundreds of steps (results/tissue-model/README.md).
NORM = {"input_shift": 0.8, "input_scale": 4.0}

#: The study's architectures (``UNetConfig`` fields besides ``NORM``), and why each is there.
ARCHS = {
    # the paper's model (4,492 parameters, receptive field 255 px): the reproduction's baseline
    "paper": {},
    # the same geometry, three times the channels (31,876 parameters): capacity for many stains
    "wide": {"channels": [6, 12, 24]},
    # one more level, stride 64 (26,148 parameters): twice the receptive field (511 px), context
    # for fat interiors and large holes, which look like glass up close
    "deep": {"depth": 4, "channels": [4, 8, 16, 16], "strides": [4, 4, 2, 2],
             "encoder_kernels": [15, 11, 7, 5], "decoder_kernels": [3, 3, 3, 3]},
}


def unet_config(arch: str) -> dict:
    from gigaseg.options import UNetConfig

    return UNetConfig(**ARCHS[arch], **NORM).to_dict()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="holds data-MPP stores; runs go here")
    ap.add_argument("--runs", required=True, help="comma-separated ARCH-MPP, e.g. paper-4,wide-8")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--lr", type=float, default=0.003)
    args = ap.parse_args(argv)
    root = Path(args.root)
    for name in args.runs.split(","):
        arch, mpp = name.rsplit("-", 1)
        run = root / name
        if (run / "checkpoint.pt").exists():
            done = json.loads((run / "config.json").read_text()).get("finished")
            cmd = [sys.executable, "-m", "gigaseg", "train", "--resume", str(run), "--steps", str(args.steps),
                   "--no-progress"]
            if done:
                print(f"{name}: finished", file=sys.stderr)
                continue
        else:
            cfg = root / f"{name}.json"
            cfg.write_text(json.dumps({
                "data": str(root / f"data-{mpp}"), "preset": unet_config(arch), "steps": args.steps, "lr": args.lr,
                "warmup": 20, "loss": "bce+dice", "seed": 0, "val_every": 100, "ckpt_every": 25,
                # no colour jitter: the slides bring their own stain variety, and HED jitter slowed
                # learning sharply in pilot runs (results/tissue-model/README.md)
                "jitter": "none",
            }, indent=1))
            cmd = [sys.executable, "-m", "gigaseg", "train", "--config", str(cfg), "--out", str(run), "--no-progress"]
        print(" ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
