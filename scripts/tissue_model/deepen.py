"""Add a level to a trained U-Net, nearly without changing what it computes: twice its context.

    python scripts/tissue_model/deepen.py builtin --channels 32 --out runs/tm/deep5-init.pt

The new deepest level is an encoder convolution (``--kernel``, stride ``--stride``) below the old
deepest one and a decoder convolution that joins its upsampled output with the old deepest
features. The old weights are kept; the new encoder's weights are drawn like a fresh layer's
(seeded); the new decoder's weights from the new level are zero and those from the old deepest
features are the identity (the centre tap), so the decoder above it sees the old deepest features
again, passed once more through the activation. For a leaky ReLU of slope a that changes only
their negative values, by the factor a (0.01): the output moves a little (printed: on a held-out
synthetic slide the stage-4 model's probabilities moved by about 0.01 on average), and
the model's receptive field grows by (kernel - 1) / 2 + 1 strides of the new level on each side.
The new weights get gradients from the first step on (those into the decoder see the new level's
output), so training grows the new level from there. The result is a checkpoint that `gigaseg
train --init` takes; its architecture becomes the run's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch


def deepen(model, channels: int, *, stride: int = 2, kernel: int = 5, seed: int = 0):
    """A UNet with one more level (see the module docstring) whose output is nearly ``model``'s."""
    from gigaseg.model import UNet

    old = model.config
    if old.activation not in ("relu", "leaky_relu"):
        raise SystemExit(f"deepen.py keeps the function of ReLU-like models only, not {old.activation!r}")
    torch.manual_seed(seed)
    new = UNet(dataclasses.replace(
        old, depth=old.depth + 1, channels=(*old.channels, channels), strides=(*old.strides, stride),
        encoder_kernels=(*old.encoder_kernels, kernel), decoder_kernels=(*old.decoder_kernels, 3)))
    with torch.no_grad():
        for i in range(old.depth):
            new.encoder[i].load_state_dict(model.encoder[i].state_dict())
        for i in range(old.depth - 1):
            new.decoder[i].load_state_dict(model.decoder[i].state_dict())
        new.head.load_state_dict(model.head.state_dict())
        join = new.decoder[old.depth - 1].conv  # in: [upsampled new level (channels), old deepest (c)]
        c = old.channels[-1]
        join.weight.zero_()
        join.bias.zero_()
        for o in range(c):
            join.weight[o, channels + o, 1, 1] = 1.0
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a checkpoint, a weights file, or `builtin`")
    ap.add_argument("--channels", type=int, required=True, help="channels of the new level")
    ap.add_argument("--stride", type=int, default=2, help="its downsampling factor")
    ap.add_argument("--kernel", type=int, default=5, help="its encoder kernel (odd)")
    ap.add_argument("--out", required=True, help="the checkpoint to write (.pt)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the new level's weights")
    args = ap.parse_args(argv)

    from gigaseg.checkpoint import load_model, save_checkpoint

    model, mpp = load_model(args.model)
    deep = deepen(model, args.channels, stride=args.stride, kernel=args.kernel, seed=args.seed)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from evaluate import held_out

    rgb = next(held_out(1, 512, mpp or 4.0))[2]
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].double() / 255
    with torch.no_grad():
        p_old, p_new = torch.sigmoid(model.double()(x)), torch.sigmoid(deep.double()(x))
    diff = (p_old - p_new).abs()
    deep.float()
    save_checkpoint(args.out, deep, mpp=mpp, deepened_from=str(args.model))
    params = sum(p.numel() for p in deep.parameters())
    print(f"{args.out}: depth {deep.config.depth}, channels {list(deep.config.channels)}, strides "
          f"{list(deep.config.strides)}, {params:,} parameters, receptive field {deep.config.halo * 2 + 1} px "
          f"(was {model.config.halo * 2 + 1}); |probability difference| from {args.model} on a held-out synthetic "
          f"slide: mean {diff.mean().item():.2g}, max {diff.max().item():.2g} (float64)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
