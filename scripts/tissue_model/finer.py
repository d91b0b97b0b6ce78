"""A model that reads its slides at half its operating mpp, starting as the given model does.

    python scripts/tissue_model/finer.py builtin --out runs/s24/finer-init.pt

The built-in model works at 4 um/px, where the walls of fat cells are a pixel wide. This makes a model of
one level more that works at 2 um/px (four times the pixels) and computes, to float32 rounding, the old model
on the image area-averaged 2 x 2, its logits enlarged 2 x 2 (nearest):

- a new first level: a 3 x 3 convolution of stride 2 into ``--c0`` channels (12 by default). Six of them
  are the 2 x 2 area average of the normalized image and its negative (the kernel's centre and the taps to
  its lower right, 1/4 each), so that after the leaky ReLU, leaky_relu(a) - leaky_relu(-a) = 1.01 a gives
  the average back; the others are free (fresh weights in, zero weights out);
- the old levels, copied; the old first level reads the average from the pair (its weights split between
  the two halves, divided by 1.01 and negated);
- a new decoder level at the old resolution: the old head, reading the average from the same pair, into
  the channel pair (logit, -logit); its other channels are free;
- a new head at the new resolution: a 3 x 3 convolution whose centre taps take the logit back from the
  pair; its weights on the image and on the free channels start at zero.

Every weight out of a free channel starts at zero, so nothing changes until training moves them; they get
gradients at once (Net2Net's function-preserving growth, as in widen.py). The result is a checkpoint that
`gigaseg train --init` takes, with the half mpp; train it on a store made at that mpp (make_data.py
--mpp 2 --size 2048 holds the slides of --mpp 4 --size 1024).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch


def finer(old, c0: int = 12, *, seed: int = 0):
    """A UNet of one level more, at half the mpp, computing ``old`` on the 2 x 2 area average (the module
    docstring)."""
    from gigaseg.model import UNet

    oc = old.config
    n_in, n_out, c1 = oc.in_channels, oc.out_channels, oc.channels[0]
    if oc.activation != "leaky_relu":
        raise SystemExit(f"the model must use leaky_relu (the pairs need it), got {oc.activation}")
    if c0 < 2 * max(n_in, n_out):
        raise SystemExit(f"--c0 must be at least {2 * max(n_in, n_out)} (a pair per input and per output "
                         f"channel), got {c0}")
    torch.manual_seed(seed)
    cfg = dataclasses.replace(oc, depth=oc.depth + 1, channels=(c0, *oc.channels), strides=(2, *oc.strides),
                              encoder_kernels=(3, *oc.encoder_kernels),
                              decoder_kernels=(3, *oc.decoder_kernels))
    new = UNet(cfg)
    g = 1 + old.encoder[0].act.negative_slope  # leaky_relu(a) - leaky_relu(-a) = g a
    with torch.no_grad():
        # the new first level: channels 0..n_in-1 the 2 x 2 average, n_in..2 n_in-1 its negative
        w, b = new.encoder[0].conv.weight, new.encoder[0].conv.bias
        w[:2 * n_in] = 0
        b[:2 * n_in] = 0
        for c in range(n_in):
            w[c, c, 1:, 1:] = 0.25
            w[n_in + c, c, 1:, 1:] = -0.25
        # the old first level, reading the average from the pair
        w, ow = new.encoder[1].conv.weight, old.encoder[0].conv.weight
        w.zero_()
        w[:, :n_in] = ow / g
        w[:, n_in:2 * n_in] = -ow / g
        new.encoder[1].conv.bias.copy_(old.encoder[0].conv.bias)
        for i in range(1, oc.depth):
            new.encoder[i + 1].load_state_dict(old.encoder[i].state_dict())
        for i in range(oc.depth - 1):
            new.decoder[i + 1].load_state_dict(old.decoder[i].state_dict())
        # the old head at the old resolution: inputs up(d_2) (c1 channels), then e_1 (c0); outputs the pairs
        w, b, hw, hb = new.decoder[0].conv.weight, new.decoder[0].conv.bias, old.head.conv.weight, old.head.conv.bias
        w[:2 * n_out] = 0
        for o in range(n_out):
            for sign, row in ((1, 2 * o), (-1, 2 * o + 1)):
                w[row, :c1] = sign * hw[o, :c1]
                w[row, c1:c1 + n_in] = sign * hw[o, c1:] / g
                w[row, c1 + n_in:c1 + 2 * n_in] = -sign * hw[o, c1:] / g
                b[row] = sign * hb[o]
        w[2 * n_out:, c1:c1 + 2 * n_in] = 0  # the free channels read the average through their own weights
        # the new head: inputs up(d_1) (c0 channels), then the image
        w, r = new.head.conv.weight, new.head.conv.weight.shape[-1] // 2
        w.zero_()
        new.head.conv.bias.zero_()
        for o in range(n_out):
            w[o, 2 * o, r, r] = 1 / g
            w[o, 2 * o + 1, r, r] = -1 / g
    return new


def check(old, new, *, seed: int = 0) -> float:
    """Max |difference| (float64) between ``new`` on a random image and ``old`` on its 2 x 2 average,
    enlarged; the image's sides are multiples of ``new``'s total stride (no padding)."""
    import torch.nn.functional as F

    s = new.config.total_stride
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, old.config.in_channels, 2 * s, 3 * s, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        want = F.interpolate(old.double()(F.avg_pool2d(x, 2)), scale_factor=2, mode="nearest")
        got = new.double()(x)
    old.float()
    new.float()
    return float((want - got).abs().max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a checkpoint, a weights file, or `builtin`")
    ap.add_argument("--out", required=True, help="the checkpoint to write (.pt)")
    ap.add_argument("--c0", type=int, default=12, help="channels of the new first level (default 12)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the free channels' weights")
    args = ap.parse_args(argv)

    from gigaseg.checkpoint import load_model, save_checkpoint

    old, mpp = load_model(args.model)
    new = finer(old, args.c0, seed=args.seed)
    diff = check(old, new, seed=args.seed)
    if diff > 1e-4:  # the weights divided by 1.01 are rounded to float32
        raise SystemExit(f"the new model differs from the old one by {diff:.3g}: a bug in finer()")
    save_checkpoint(args.out, new, mpp=mpp / 2, finer_from=str(args.model))
    params = sum(p.numel() for p in new.parameters())
    print(f"{args.out}: {mpp / 2:g} um/px, channels {list(new.config.channels)}, strides "
          f"{list(new.config.strides)}, {params:,} parameters; max |difference| from {args.model} on the "
          f"2 x 2 average {diff:.1e} (float64)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
