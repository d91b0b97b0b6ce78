"""Average the weights of several checkpoints of one run into one model (stochastic weight averaging).

    python scripts/tissue_model/average.py RUN/checkpoints/step-25000.pt RUN/checkpoints/step-26000.pt ... --out avg.pt

(the checkpoints that ``gigaseg train --keep-every 1000`` keeps, or any others of one run).

The checkpoints must share one architecture and resolution (the same run at different steps).
Each weight of the result is the mean of that weight over the checkpoints, computed in float64
(Izmailov et al. 2018, "Averaging weights leads to wider optima and better generalization"). The
U-Net has no normalization layers, so nothing needs recomputing afterwards. The result is a
checkpoint that `gigaseg predict --model`, `scripts/real_slides_eval.py --model` and ship.py's
`gigaseg.checkpoint.load_model` take, with the averaged files listed in its ``averaged_from``.
"""

from __future__ import annotations

import argparse
import sys

import torch


def average(models: list) -> torch.nn.Module:
    """A copy of ``models[0]`` whose every weight is the mean of the ``models``' (same config)."""
    import copy

    first = models[0]
    for m in models[1:]:
        if m.config != first.config:
            raise SystemExit(f"cannot average different architectures: {first.config} and {m.config}")
    out = copy.deepcopy(first)
    params = [dict(m.named_parameters()) for m in models]
    with torch.no_grad():
        for name, p in out.named_parameters():
            p.copy_(torch.stack([ps[name].double() for ps in params]).mean(0).to(p.dtype))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="two or more checkpoints of one run")
    ap.add_argument("--out", required=True, help="the checkpoint to write (.pt)")
    args = ap.parse_args(argv)
    if len(args.checkpoints) < 2:
        raise SystemExit("give at least two checkpoints to average")

    from gigaseg.checkpoint import load_model, save_checkpoint

    loaded = [load_model(c) for c in args.checkpoints]
    mpps = {mpp for _, mpp in loaded}
    if len(mpps) > 1:
        raise SystemExit(f"the checkpoints were trained at different resolutions: {sorted(mpps)} um/px")
    model = average([m for m, _ in loaded])
    save_checkpoint(args.out, model, mpp=loaded[0][1], averaged_from=[str(c) for c in args.checkpoints])
    print(f"{args.out}: the mean of {len(loaded)} checkpoints' weights")
    return 0


if __name__ == "__main__":
    sys.exit(main())
