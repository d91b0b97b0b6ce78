"""Split a model's first level into two of stride 2, as the start of a model that reads its input finely.

    python scripts/tissue_model/split_front.py builtin --data runs/s20/data-plain --out runs/s22/split16.pt

The built-in model's first level is one linear convolution (15 x 15, stride 4) and a leaky ReLU: every
later layer sees the input only through those 8 sums over 60 um. This makes a model whose first two
levels are a 5 x 5 convolution of stride 2 (``--c1`` channels, 16 by default), a leaky ReLU, and a 7 x 7
convolution of stride 2 into the old level's channels (a receptive field of 17 pixels, centred where the
old one was), and whose other levels are the old model's, copied:

- encoder: the new levels 3.. are the old levels 2..; the new level 2's output stands for the old level 1's;
- decoder: the new level 1's decoder (a 1 x 1 convolution at stride 2) passes the old level 1's
  decoder output d on as the pair (leaky_relu(d), leaky_relu(-d)), from which the head, the old head
  with its weights split between the two halves (divided by 1.01 and negated), gets d back exactly:
  leaky_relu(d) - leaky_relu(-d) = 1.01 d for the slope 0.01. So ``--c1`` must be at least twice the
  old level's channels.

The two new convolutions are then fitted (``--steps`` of Adam, mean squared error) to reproduce the old
first level's pre-activation on random crops of the training slides of ``--data`` (a store of make_data.py,
read as the model reads them: glass-balanced). Nothing else is trained here. The script prints how far
the new model's probabilities are from the old one's on other crops and writes a checkpoint that
``gigaseg train --init`` takes (its architecture becomes the run's).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

SLOPE = 0.01  # the leaky ReLU's (gigaseg.model)


def split(old, c1: int):
    """A depth + 1 UNet whose levels after the first two are ``old``'s (see the module docstring); its first
    two encoder convolutions are fresh (PyTorch's initialization)."""
    import torch

    from gigaseg.model import UNet

    oc = old.config
    c_old = oc.channels[0]
    if oc.strides[0] != 4 or oc.encoder_kernels[0] > 17:
        raise SystemExit(f"the model's first level must have stride 4 and a kernel of at most 17, got stride "
                         f"{oc.strides[0]} and kernel {oc.encoder_kernels[0]}")
    if oc.activation != "leaky_relu":
        raise SystemExit(f"the model must use leaky_relu (the head recovers d from a pair of them), "
                         f"got {oc.activation}")
    if c1 < 2 * c_old:
        raise SystemExit(f"--c1 must be at least twice the first level's {c_old} channels, got {c1}")
    cfg = dataclasses.replace(oc, depth=oc.depth + 1, channels=(c1, *oc.channels), strides=(2, 2, *oc.strides[1:]),
                              encoder_kernels=(5, 7, *oc.encoder_kernels[1:]),
                              decoder_kernels=(oc.decoder_kernels[0], 1, *oc.decoder_kernels[1:]))
    new = UNet(cfg)
    with torch.no_grad():
        for i in range(1, oc.depth):
            new.encoder[i + 1].load_state_dict(old.encoder[i].state_dict())
        for i in range(oc.depth - 1):
            new.decoder[i + 1].load_state_dict(old.decoder[i].state_dict())
        eye = torch.eye(c_old)
        w = new.decoder[0].conv.weight  # inputs: up(d_2) (c_old channels), then e_1 (c1)
        w.zero_()
        w[:c_old, :c_old, 0, 0] = eye
        w[c_old:2 * c_old, :c_old, 0, 0] = -eye
        new.decoder[0].conv.bias.zero_()
        hw, ow = new.head.conv.weight, old.head.conv.weight  # inputs: up(d_1), then the image
        hw.zero_()
        hw[:, :c_old] = ow[:, :c_old] / (1 + SLOPE)
        hw[:, c_old:2 * c_old] = -ow[:, :c_old] / (1 + SLOPE)
        hw[:, c1:] = ow[:, c_old:]
        new.head.conv.bias.copy_(old.head.conv.bias)
    return new


def distil(old, new, images: list[np.ndarray], *, steps: int, crop: int, seed: int, log=print) -> float:
    """Fit ``new``'s first two convolutions to ``old``'s first level (pre-activation) on crops of ``images``
    (uint8, as the model reads them); the last batch's mean squared error."""
    import torch
    import torch.nn.functional as F

    oc = old.config
    rng = np.random.default_rng(seed)
    teacher, a, b = old.encoder[0].conv, new.encoder[0].conv, new.encoder[1].conv
    k = teacher.weight.shape[-1]

    def batch(n: int = 8) -> torch.Tensor:
        xs = []
        for _ in range(n):
            im = images[rng.integers(len(images))]
            y, x = rng.integers(0, im.shape[0] - crop + 1), rng.integers(0, im.shape[1] - crop + 1)
            xs.append(im[y:y + crop, x:x + crop])
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255
        return (x - oc.input_shift) * oc.input_scale if oc.normalizes else x

    opt = torch.optim.Adam([*a.parameters(), *b.parameters()], lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    t0, err = time.perf_counter(), 0.0
    for step in range(steps + 1):
        x = batch()
        with torch.no_grad():
            target = F.conv2d(x, teacher.weight, teacher.bias, stride=4, padding=k // 2)
        mid = F.leaky_relu(F.conv2d(x, a.weight, a.bias, stride=2, padding=2), SLOPE)
        loss = F.mse_loss(F.conv2d(mid, b.weight, b.bias, stride=2, padding=3), target)
        err = float(loss.detach())
        if step % 500 == 0 or step == steps:
            log(f"step {step}: mean squared error {err:.4f} (the target's variance {float(target.var()):.2f}), "
                f"{time.perf_counter() - t0:.0f} s")
        if step == steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return err


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a checkpoint, a weights file, or `builtin`")
    ap.add_argument("--data", required=True, help="a store of make_data.py: its training slides are the crops' source")
    ap.add_argument("--out", required=True, help="the checkpoint to write (.pt)")
    ap.add_argument("--c1", type=int, default=16, help="channels of the new first level (default 16)")
    ap.add_argument("--steps", type=int, default=2000, help="distillation steps, 8 crops each (default 2000)")
    ap.add_argument("--crop", type=int, default=256, help="crop side in pixels (default 256)")
    ap.add_argument("--slides", type=int, default=96, help="training slides the crops come from (default 96)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from gigaseg.checkpoint import load_model, save_checkpoint
    from gigaseg.glass import balance_for
    from gigaseg.store import RegionStore

    torch.manual_seed(args.seed)
    old, mpp = load_model(args.model)
    new = split(old, args.c1)
    regions = RegionStore(Path(args.data)).split("train")
    if not regions:
        raise SystemExit(f"{args.data} has no training slides")
    rng = np.random.default_rng(args.seed)
    picked = rng.choice(len(regions), min(args.slides, len(regions)), replace=False)
    images = [np.asarray(balance_for(old, np.asarray(regions[int(i)].image), seams=False)[:, :]) for i in picked]
    small = min(min(im.shape[:2]) for im in images)
    if small < args.crop:
        raise SystemExit(f"--crop {args.crop} is larger than the smallest slide ({small} pixels): give a smaller one")
    distil(old, new, images, steps=args.steps, crop=args.crop, seed=args.seed)
    check = np.random.default_rng(args.seed + 1)
    x = torch.from_numpy(np.stack([im[:args.crop, :args.crop] for im in
                                   (images[int(i)] for i in check.choice(len(images), min(4, len(images))))]))
    x = x.permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        p_old, p_new = torch.sigmoid(old(x)), torch.sigmoid(new(x))
    agree = float(((p_old >= 0.5) == (p_new >= 0.5)).float().mean())
    save_checkpoint(args.out, new, mpp=mpp, split_from=str(args.model))
    params = sum(p.numel() for p in new.parameters())
    print(f"{args.out}: channels {list(new.config.channels)}, strides {list(new.config.strides)}, "
          f"{params:,} parameters; "
          f"against {args.model}: mean |difference| of the probabilities {float((p_old - p_new).abs().mean()):.4f}, "
          f"masks agree on {agree:.2%} of the pixels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
