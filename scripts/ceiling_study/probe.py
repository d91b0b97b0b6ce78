"""Ceiling probes: the `paper` preset's training on the study's regions with one thing of the
model changed (results/ceiling-study/README.md). Each variant is a UNetConfig of its own, given to
TrainConfig. The study's runs are results/ceiling-study/wide-model/ and first-stride-2/.

Frozen: kept as the record of the ceiling study's model probes; not maintained against later code.

    python scripts/ceiling_study/probe.py wide4 --data regions --out wide-model --steps 600
    python scripts/ceiling_study/probe.py stride2 --data regions --out first-stride-2 --steps 600
"""

import argparse
import dataclasses

from gigaseg import TrainConfig, preset, train

VARIANTS = {
    # the same layers with 4x the channels: 54,796 parameters
    "wide4": dataclasses.replace(preset("paper"), channels=(8, 16, 32)),
    # a first stride of 2 (then 4, 4: the same total stride), 4,492 parameters
    "stride2": dataclasses.replace(preset("paper"), strides=(2, 4, 4)),
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("--data", required=True,
                        help="the study's region store (results/ceiling-study/README.md: gigaseg prepare ...)")
    parser.add_argument("--out", required=True, help="a new run folder")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    train(TrainConfig(data=args.data, out=args.out, preset=VARIANTS[args.variant], steps=args.steps, lr=0.003,
                      warmup=10, val_every=200, ckpt_every=200, progress=False))
