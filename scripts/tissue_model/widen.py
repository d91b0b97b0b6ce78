"""Widen a trained U-Net without changing what it computes, as the start of a larger model.

    python scripts/tissue_model/widen.py builtin --channels 4,16,32,32 --out runs/tm/wide16-init.pt

Each level gets more channels (never fewer). The old weights are kept where they were; the new
channels' incoming weights are drawn like a fresh layer's (PyTorch's default initialization, seeded),
and every weight from a new channel into an old one is zero, so the widened model's output is the
old model's exactly (checked here on a random image, float64). The weights out of the new channels
get gradients at once, and after the first step every new weight does: the new channels start
silent and grow as training needs them (function-preserving widening, Chen et al. 2016, "Net2Net").
The result is a checkpoint that `gigaseg train --init` takes; its architecture becomes the run's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch


def widen(model, channels: list[int], *, seed: int = 0):
    """A UNet with ``channels`` per level whose function equals ``model``'s (see the module docstring)."""
    from gigaseg.model import UNet

    old = model.config
    if len(channels) != old.depth or any(n < o for n, o in zip(channels, old.channels)):
        raise SystemExit(f"--channels needs {old.depth} values, each at least the model's {list(old.channels)}")
    torch.manual_seed(seed)
    new = UNet(dataclasses.replace(old, channels=tuple(channels)))
    c_old = (old.in_channels, *old.channels)
    c_new = (old.in_channels, *channels)

    def copy(dst: torch.nn.Conv2d, src: torch.nn.Conv2d, groups_old: list[int], groups_new: list[int]) -> None:
        """Copy ``src`` into ``dst``: output channels 0..o-1, input channels group by group (the
        concatenation's parts); zero the new inputs of the old outputs."""
        o = src.weight.shape[0]
        with torch.no_grad():
            dst.weight[:o] = 0
            a_old = a_new = 0
            for g_old, g_new in zip(groups_old, groups_new):
                dst.weight[:o, a_new:a_new + g_old] = src.weight[:, a_old:a_old + g_old]
                a_old += g_old
                a_new += g_new
            dst.bias[:o] = src.bias

    for i in range(old.depth):
        copy(new.encoder[i].conv, model.encoder[i].conv, [c_old[i]], [c_new[i]])
    for i in range(old.depth - 1):
        copy(new.decoder[i].conv, model.decoder[i].conv, [c_old[i + 2], c_old[i + 1]], [c_new[i + 2], c_new[i + 1]])
    copy(new.head.conv, model.head.conv, [c_old[1], c_old[0]], [c_new[1], c_new[0]])
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a checkpoint, a weights file, or `builtin`")
    ap.add_argument("--channels", required=True, help="channels per level, comma-separated, e.g. 4,16,32,32")
    ap.add_argument("--out", required=True, help="the checkpoint to write (.pt)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the new channels' weights")
    args = ap.parse_args(argv)

    from gigaseg.checkpoint import load_model, save_checkpoint

    model, mpp = load_model(args.model)
    wide = widen(model, [int(v) for v in args.channels.split(",")], seed=args.seed)
    x = torch.rand(1, model.config.in_channels, 300, 260, dtype=torch.float64)
    with torch.no_grad():
        diff = (model.double()(x) - wide.double()(x)).abs().max().item()
    if diff > 1e-9:
        raise SystemExit(f"the widened model differs from the original by {diff:.3g}: a bug in widen()")
    wide.float()
    save_checkpoint(args.out, wide, mpp=mpp, widened_from=str(args.model))
    params = sum(p.numel() for p in wide.parameters())
    print(f"{args.out}: channels {list(wide.config.channels)}, {params:,} parameters, "
          f"max |difference| from {args.model} {diff:.1e} (float64)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
