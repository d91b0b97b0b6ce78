"""Worked example of a slide-level head (issue 21, item 4): a ``SlideClassifier`` learns a
slide-level label that a few small regions decide, trained end to end by the exact tiled engine.

Synthetic H&E slides (``gigaseg.synth.render_region``, profile "he") of SIZE x SIZE pixels; in half
of them (label 1) this script paints 2-4 "lesions": dense clusters of golden-brown, pigment-laden
cells 30-60 px wide inside the tissue, about 1% of a 1024 x 1024 slide's pixels. The model is a small
local trunk of the script's own (``make_trunk``: strided convolutions, then nearest upsampling to full
resolution) with K feature maps, max (or attention) pooling over every pixel, and a 2-layer MLP head; each step
is one ``tiled_backward(classifier, image, label, loss="ce", tile=...)`` on a whole slide (the
slide is read in tiles: the exact two-pass step of NOTE [Slide heads]). Held-out accuracy is
measured with ``tiled_predict`` on slides never seen in training.

Writes OUT/ (default results/slide-classifier/): README.md, curve.png, results.json (the training
curve, the held-out evaluations, the settings and timings) and examples.png (two positive slides,
their lesions boxed). Rendered slides are cached in --cache (not committed).

    OMP_NUM_THREADS=1 python scripts/slide_classifier_example.py    # ~5 min to render, ~5 to train, one core
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import gigaseg
from gigaseg import UNet, UNetConfig
from gigaseg.engine import slide as slide_engine
from gigaseg.engine.slide import SlideClassifier
from gigaseg.synth import render_region

K = 8  # the trunk's feature maps


class GlassCentred(nn.Module):
    """The input (RGB / 255) centred on the glass (about 0.97) and scaled: the image border's zero
    padding then looks like glass, not like a dark frame that max pooling would find on every slide."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.93) * 4.0


def make_trunk(k: int = K) -> nn.Module:
    """A local trunk of k feature maps: two strided convolutions (total stride 4), a third at 1/4
    resolution, and nearest upsampling back to full resolution (the engine takes any local module)."""
    return nn.Sequential(
        GlassCentred(),
        nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, k, 3, padding=1),
        nn.Upsample(scale_factor=4, mode="nearest"),
    )


def _entry(name: str):  # type: ignore[no-untyped-def]
    """``gigaseg.tiled_backward``/``tiled_predict`` where they take a SlideClassifier, else the
    slide engine's own functions (the same computation)."""
    from gigaseg.engine import tiled_backward, tiled_predict

    probe = SlideClassifier(UNet(UNetConfig(depth=1, channels=(2,), strides=(2,), encoder_kernels=(3,),
                                            decoder_kernels=(3,), out_channels=1)), nn.Linear(1, 2))
    try:
        tiled_predict(probe, np.zeros((4, 4, 3), np.uint8), tile=4)
    except gigaseg.UnsupportedModelError:
        return slide_engine.slide_backward if name == "backward" else slide_engine.slide_predict
    return tiled_backward if name == "backward" else tiled_predict


# --- the data ----------------------------------------------------------------------------------


def paint_lesions(rgb: np.ndarray, tissue: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
    """Paints 2-4 "lesions" into tissue, in place: dense clusters of golden-brown, pigment-laden
    cells (think haemosiderin-laden macrophages), 30-60 px wide; returns their boxes [x0, y0, x1, y1]."""
    h, w = tissue.shape
    yy, xx = np.mgrid[0:h, 0:w]
    inside = np.argwhere(tissue[40:h - 40, 40:w - 40] > 0) + 40
    boxes = []
    for _ in range(int(rng.integers(2, 5))):
        cy, cx = inside[rng.integers(len(inside))]
        radius = float(rng.uniform(15, 30))
        y0, y1, x0, x1 = int(cy - radius - 6), int(cy + radius + 6), int(cx - radius - 6), int(cx + radius + 6)
        patch = rgb[y0:y1, x0:x1].astype(np.float64)
        py, px = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
        disk = np.clip(radius + 2 - np.hypot(py - cy, px - cx), 0, 4) / 4  # soft-edged disk
        tint = np.array([215.0, 180.0, 90.0])  # a brownish stroma between the cells
        patch = patch * (1 - 0.5 * disk[..., None]) + tint * 0.5 * disk[..., None]
        for _ in range(int(0.55 * radius**2)):  # crowded: more cells than fit side by side
            r = radius * np.sqrt(rng.uniform())
            a = rng.uniform(0, 2 * np.pi)
            ny, nx = cy + r * np.sin(a), cx + r * np.cos(a)
            blob = np.clip(rng.uniform(2.5, 4.0) + 0.5 - np.hypot(py - ny, px - nx), 0, 1)
            colour = np.array([210.0, 165.0, 20.0]) * rng.uniform(0.85, 1.05) + rng.normal(0, 6, 3)
            patch = patch * (1 - 0.9 * blob[..., None]) + colour * 0.9 * blob[..., None]
        rgb[y0:y1, x0:x1] = np.clip(patch.round(), 0, 255).astype(np.uint8)
        boxes.append([x0, y0, x1, y1])
    return boxes


def make_slide(index: int, size: int, mpp: float, cache: Path) -> tuple[np.ndarray, int, list[list[int]]]:
    """Slide ``index``: (rgb, label, lesion boxes); label 1 (lesions painted) for odd indices.
    The rendered slide is cached in ``cache``; the lesions are painted on each call."""
    path = cache / f"base-{size}-{mpp}-{index}.npz"
    if path.exists():
        data = np.load(path)
        rgb, tissue = data["rgb"], data["tissue"]
    else:
        rgb, tissue = render_region(10_000 + index, 0, 0, size, size, width=size, height=size, mpp=mpp,
                                    profile="he")
        np.savez(path, rgb=rgb, tissue=tissue)
    label = index % 2
    boxes = paint_lesions(rgb, tissue, np.random.default_rng(index)) if label else []
    return rgb, label, boxes


# --- training ------------------------------------------------------------------------------------


def evaluate(model: SlideClassifier, slides: list[tuple[np.ndarray, int]], tile: int) -> dict[str, float]:
    predict = _entry("predict")
    probs = np.array([predict(model, rgb, tile=tile) for rgb, _ in slides])
    labels = np.array([label for _, label in slides])
    ce = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))
    pred = probs.argmax(axis=1)
    return {"accuracy": float((pred == labels).mean()), "mean_ce": float(ce.mean()),
            "sensitivity": float((pred[labels == 1] == 1).mean()),
            "specificity": float((pred[labels == 0] == 0).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/slide-classifier")
    parser.add_argument("--cache", default="/tmp/gigaseg-slide-classifier-cache")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--mpp", type=float, default=1.0)
    parser.add_argument("--train", type=int, default=64, help="training slides (half with lesions)")
    parser.add_argument("--heldout", type=int, default=48, help="held-out slides (half with lesions)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--pool", default="max", choices=["max", "attention", "mean"])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--features", type=int, default=K, help="K, the trunk's feature maps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out, cache = Path(args.out), Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    train = [make_slide(i, args.size, args.mpp, cache) for i in range(args.train)]
    held = [make_slide(100_000 + i, args.size, args.mpp, cache) for i in range(args.heldout)]
    render_s = time.perf_counter() - t0
    lesion_fraction = [sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in b) / args.size**2 for _, lab, b in train + held
                       if lab]
    print(f"{len(train)} training and {len(held)} held-out slides in {render_s:.0f} s; lesion boxes cover "
          f"{100 * np.mean(lesion_fraction):.2f}% of a positive slide on average", flush=True)

    torch.manual_seed(args.seed)
    k = args.features
    trunk = make_trunk(k)
    head = nn.Sequential(nn.Linear(k, 16), nn.ReLU(), nn.Linear(16, 2))
    model = SlideClassifier(trunk, head, args.pool)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    backward = _entry("backward")
    rng = np.random.default_rng(args.seed)
    curve, evals = [], []
    held_pairs = [(rgb, label) for rgb, label, _ in held]
    ema = None
    t_train = time.perf_counter()
    step_s = 0.0
    for step in range(1, args.steps + 1):
        rgb, label, _ = train[int(rng.integers(len(train)))]
        view = np.rot90(rgb, int(rng.integers(4)))  # augmentation: the label does not depend on it
        if rng.integers(2):
            view = view[:, ::-1]
        t = time.perf_counter()
        optimizer.zero_grad()
        loss = backward(model, view, label, loss="ce", tile=args.tile)
        optimizer.step()
        step_s += time.perf_counter() - t
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        curve.append({"step": step, "loss": loss, "loss_ema": ema})
        if step % args.eval_every == 0 or step == args.steps:
            ev = evaluate(model, held_pairs, args.tile)
            evals.append({"step": step, **ev})
            print(f"step {step}: loss ema {ema:.3f}, held-out accuracy {ev['accuracy']:.3f}, "
                  f"CE {ev['mean_ce']:.3f} ({time.perf_counter() - t_train:.0f} s)", flush=True)
    train_s = time.perf_counter() - t_train

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {
        "command": "OMP_NUM_THREADS=1 python scripts/slide_classifier_example.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k != "cache" and (k != "out" or v != parser.get_default("out"))),
        "commit": commit, "gigaseg": gigaseg.__version__, "torch": torch.__version__,
        "machine": platform.machine(), "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "slides": {"size": args.size, "mpp": args.mpp, "train": args.train, "heldout": args.heldout,
                   "positives": ("odd indices: 2-4 painted lesions each (dense clusters of golden-brown pigment-laden "
                                 "cells, 30-60 px wide)"),
                   "lesion_box_fraction_mean": float(np.mean(lesion_fraction)),
                   "lesion_box_fraction_max": float(np.max(lesion_fraction))},
        "entry": f"{backward.__module__}.{backward.__name__}",
        "model": {"trunk": str(trunk), "features": k, "pool": args.pool, "head": str(head),
                  "parameters": sum(p.numel() for p in model.parameters())},
        "training": {"steps": args.steps, "optimizer": f"Adam(lr={args.lr})", "tile": args.tile,
                     "seconds": round(train_s, 1), "seconds_per_step": round(step_s / args.steps, 3),
                     "render_seconds": round(render_s, 1)},
        "heldout_final": evals[-1],
        "heldout": evals,
        "curve": curve,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    _plot(out, curve, evals, len(held))
    _examples(out, [s for s in held if s[1]][:2])
    _readme(out, result)
    print(json.dumps(result["heldout_final"]))


def _plot(out: Path, curve: list[dict[str, float]], evals: list[dict[str, float]], n_held: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [c["step"] for c in curve]
    ax[0].plot(steps, [c["loss"] for c in curve], lw=0.5, alpha=0.4, label="step loss")
    ax[0].plot(steps, [c["loss_ema"] for c in curve], lw=1.5, label="moving average")
    ax[0].set_xlabel("step (one whole slide)")
    ax[0].set_ylabel("cross-entropy")
    ax[0].legend()
    ax[1].plot([e["step"] for e in evals], [e["accuracy"] for e in evals], "o-", label="accuracy")
    ax[1].plot([e["step"] for e in evals], [e["mean_ce"] for e in evals], "s--", label="mean CE")
    ax[1].set_xlabel("step")
    ax[1].set_title(f"held-out slides (n = {n_held})", fontsize=9)
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)


def _examples(out: Path, slides: list[tuple[np.ndarray, int, list[list[int]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, 2 * len(slides), figsize=(4 * 2 * len(slides), 4))
    for i, (rgb, _, boxes) in enumerate(slides):
        axes[2 * i].imshow(rgb)
        for x0, y0, x1, y1 in boxes:
            axes[2 * i].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1.2))
        x0, y0, x1, y1 = boxes[0]
        pad = 40
        axes[2 * i + 1].imshow(rgb[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad])
        axes[2 * i].set_title("held-out positive slide", fontsize=9)
        axes[2 * i + 1].set_title("its first lesion", fontsize=9)
    for a in axes:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(out / "examples.png", dpi=90)


_ATTEMPT_NOTE = """
`unet-trunk-attempt.log` is an earlier run of this script (commit 4c5fa04) with a gigaseg.UNet
trunk (depth 3, channels 8, 16, 16, 8 output maps, the input centred on the glass) in place of
`make_trunk`, stopped after 150 steps at chance (held-out accuracy 0.500). Our reading, not
verified: the UNet's last layer sees the full-resolution input through its skip connection, so
max pooling picks single-pixel extremes (pen edges, noise) rather than the clusters. The trunk
here computes at 1/4 resolution and learned the label within 150 steps.
"""


def _readme(out: Path, r: dict) -> None:  # type: ignore[type-arg]
    f = r["heldout_final"]
    s, t, m = r["slides"], r["training"], r["model"]
    evals = "\n".join(f"| {e['step']} | {e['accuracy']:.3f} | {e['sensitivity']:.3f} | {e['specificity']:.3f} | "
                      f"{e['mean_ce']:.3f} |" for e in r["heldout"])
    (out / "README.md").write_text(f"""# A slide-level classifier trained end to end with the tiled engine

Issue 21, item 4. Made by `scripts/slide_classifier_example.py` (commit {r['commit']}):

    {r['command']}

**Task.** {s['train']} training and {s['heldout']} held-out synthetic H&E slides
(`gigaseg.synth.render_region`, profile "he", {s['size']} x {s['size']} px at {s['mpp']} um/px).
Half of them (label 1) carry 2-4 painted "lesions": dense clusters of golden-brown,
pigment-laden cells (think haemosiderin-laden macrophages) 30-60 px wide inside the tissue.
The boxes around them cover {100 * s['lesion_box_fraction_mean']:.2f}%
of a positive slide's pixels on average (at most {100 * s['lesion_box_fraction_max']:.2f}%): the
label is decided by a tiny fraction of the pixels, and the rest of each slide (tissue, nuclei,
pen marks, debris) is the same kind in both classes. `examples.png` shows two held-out positives.

**Model.** `SlideClassifier(make_trunk({m['features']}), head, pool="{m['pool']}")`: a local trunk
of the script's own, `{' '.join(m['trunk'].split())}` (the input centred on the glass, two strided
convolutions, a third at 1/4 resolution, nearest upsampling back to {m['features']} feature maps at
full resolution; the engine derives its stride, 4, and halo), {m['pool']} pooling over every pixel
of the slide, and the head `{' '.join(m['head'].split())}`; {m['parameters']} parameters in all.
Calls went through `{r['entry']}`.

**Training.** {t['steps']} steps of {t['optimizer']}, one whole slide per step (random rotation
and flip), each step `tiled_backward(classifier, slide, label, loss="ce", tile={t['tile']})`: pass 1
runs the trunk over the slide's tiles without autograd and gathers the pooled features, the head
runs once, and pass 2 backpropagates each tile's exact share (with max pooling only the tiles
holding a channel's maximum; docs/engine.md, "Slide-level heads"). {t['seconds_per_step']} s per
step, {t['seconds']:.0f} s in all on {r['threads']} CPU thread(s) of a shared machine.

**Result.** Held-out accuracy **{f['accuracy']:.3f}** on {s['heldout']} slides (sensitivity
{f['sensitivity']:.3f}, specificity {f['specificity']:.3f}, mean cross-entropy {f['mean_ce']:.3f}),
with `tiled_predict(classifier, slide)` (the class probabilities, one pass over the tiles).

| step | held-out accuracy | sensitivity | specificity | mean CE |
|---|---|---|---|---|
{evals}

![training curve](curve.png)

`results.json` holds the whole curve (loss of every step), the evaluations and the settings.
{_ATTEMPT_NOTE if (out / "unet-trunk-attempt.log").exists() else ""}""")


if __name__ == "__main__":
    main()
