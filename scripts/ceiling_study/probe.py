"""Ceiling probes: the `paper` preset's training on the study's regions with one thing of the
model changed (see README.md here). Each variant is registered as a preset for the run.

    python results/ceiling-study/probe.py wide4 --data regions --out wide-model --steps 600
    python results/ceiling-study/probe.py stride2 --data regions --out first-stride-2 --steps 600
"""

import argparse
import dataclasses

from gigaseg import model as M
from gigaseg.train import TrainConfig, train

VARIANTS = {
    # the same layers with 4x the channels: 54,796 parameters
    "wide4": dataclasses.replace(M.UNetConfig(), channels=(8, 16, 32)),
    # a first stride of 2 (then 4, 4: the same total stride), 4,492 parameters
    "stride2": dataclasses.replace(M.UNetConfig(), strides=(2, 4, 4)),
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("--data", required=True, help="the study's region store (README.md: gigaseg prepare ...)")
    parser.add_argument("--out", required=True, help="a new run folder")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    M.PRESETS[args.variant] = VARIANTS[args.variant]
    train(TrainConfig(data=args.data, out=args.out, preset=args.variant, steps=args.steps, lr=0.003,
                      warmup=10, val_every=200, ckpt_every=200, progress=False))
