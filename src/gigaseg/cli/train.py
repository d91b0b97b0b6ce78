"""``gigaseg train`` (the training loop) and ``gigaseg demo`` (synthetic data to prediction, end to end)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap

from ..options import (
    DEFAULT_DEMO_OUT,
    DEFAULT_DEMO_SCALE,
    DEFAULT_DEVICE,
    DEMO_SCALES,
    JITTERS,
    PRESET_NAMES,
    RESUME_CHANGEABLE,
    SCHEDULES,
    TRAIN_LOSSES,
    TrainConfig,
)

#: TrainConfig's defaults: what --help shows and what an option not given means.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
#: The flag of each TrainConfig option that is a switch (the others are --name-with-dashes).
_SWITCHES = {"augment": "--no-augment", "progress": "--no-progress"}


def _flag(name: str) -> str:
    return _SWITCHES.get(name, "--" + name.replace("_", "-"))


_TRAIN_HELP = f"""\
Train a U-Net on whole regions of a region store (gigaseg prepare), one (or K) per step,
with the exact tiled engine: the gradient of the loss over the whole region, in bounded memory.

  gigaseg prepare --synthetic 6 --val 2 --size 2048x4096 --out regions/
  gigaseg train --data regions/ --preset paper --steps 300 --out runs/a
  gigaseg train --resume runs/a                 # after Ctrl-C: continues exactly where it stopped
  gigaseg train --resume runs/a --steps 600     # continue further (the schedule stretches)
  gigaseg train --config runs/a/config.json --out runs/b --lr 0.001   # runs/a's options, another rate
  gigaseg prepare my.svs --masks my.geojson --size 4096x4096 --mpp 4 --out mine/
  gigaseg train --data mine/ --init builtin --lr 0.0003 --steps 200 --out runs/d   # fine-tune the built-in model
  torchrun --standalone --nproc-per-node 4 -m gigaseg train --data regions/ --out runs/c --regions-per-step 2
                                                # 4 processes, 2 regions per step (docs/distributed.md)

RUN_DIR gets config.json (every option, versions, machine), log.csv (one row per step:
loss, lr, seconds, peak anonymous memory, validation Dice mean and sd), val.csv (Dice per
held-out region), curves.png and checkpoint.pt (the latest; replaced atomically).
Held-out regions: the store's "val" split, or --val-data STORE2 (its "val" split, or all its
regions when it has none). With --config FILE (a run's config.json, or TrainConfig's fields
as JSON) the options come from the file, and flags given here override them. With --resume,
only these may be given (the rest comes from the run):
{textwrap.fill(", ".join(_flag(n) for n in RESUME_CHANGEABLE), 92, initial_indent="  ", subsequent_indent="  ",
              break_on_hyphens=False)}
"""

_DEMO_HELP = """\
The end-to-end demo, on a fresh machine, in a few minutes on a laptop CPU: make synthetic
H&E training and held-out regions (each several megapixels), train the `paper` U-Net
(4,492 parameters) on whole regions with the exact tiled engine, report the held-out Dice,
predict a held-out synthetic whole-slide image, and write the curves, an overlay of the
prediction and a summary (summary.json, summary.txt) into --out.

--scale paper runs the paper's experiment instead: 16000 x 64000 regions (8 training,
4 held out), 4,940 steps: days on a CPU, a GPU advised, and about 50 GB of disk.
"""


def register(subparsers, formatter_class) -> None:
    S = argparse.SUPPRESS

    # A TrainConfig option: not given, it is absent from the parsed arguments (so that --config
    # and --resume can tell what the command line sets); --help shows TrainConfig's default.
    def opt(p, flag, help_text, **kw):
        name = flag.lstrip("-").replace("-", "_")
        default = _DEFAULTS.get(kw.get("dest", name), None)
        suffix = f" (default: {default})" if default is not None else ""
        p.add_argument(flag, default=S, help=help_text + suffix, **kw)

    p = subparsers.add_parser(
        "train",
        help="train a U-Net on whole regions of a region store (exact tiled gradients)",
        description=_TRAIN_HELP,
        formatter_class=formatter_class,
    )
    opt(p, "--data", "the region store to train on (its 'train' split)", metavar="STORE")
    opt(p, "--out", "the run folder (new, or empty)", metavar="RUN_DIR")
    opt(p, "--resume", "continue the run in RUN_DIR from its checkpoint.pt", metavar="RUN_DIR")
    p.add_argument("--config", default=S, metavar="FILE",
                   help="train with the options in FILE (a run's config.json); flags given here override them")
    opt(p, "--preset", "model preset", choices=PRESET_NAMES)
    opt(p, "--init", "start from these weights: 'builtin' (the built-in tissue model, to fine-tune it on your "
        "slides) or a checkpoint; the architecture is then the file's", metavar="MODEL")
    opt(p, "--steps", "total optimizer steps, --regions-per-step whole regions each", type=int)
    opt(p, "--regions-per-step", "K whole regions per step, gradients averaged (batch size K); under torchrun the N "
        "processes form K groups, one region each (N a multiple of K); one process takes them one after another",
        type=int, metavar="K")
    opt(p, "--lr", "Adam's peak learning rate", type=float)
    opt(p, "--schedule", "learning-rate schedule after the warm-up", choices=SCHEDULES)
    opt(p, "--warmup", "linear warm-up steps", type=int)
    opt(p, "--min-lr-ratio", "cosine: the final learning rate relative to --lr", type=float)
    opt(p, "--decay-every", "step schedule: steps between decays (default: a third of --steps)", type=int)
    opt(p, "--decay-gamma", "step schedule: factor of each decay", type=float)
    opt(p, "--weight-decay", "Adam's weight decay", type=float)
    opt(p, "--loss", "loss over the whole region: bce, dice or bce+dice for one channel; ce, dice or ce+dice for "
        "several --classes", choices=TRAIN_LOSSES)
    opt(p, "--classes", "the class names of a model of several classes, in the order of the masks' class indices "
        "0..C-1 (255: ignore); default: the store's (its regions' \"classes\"), or one channel (tissue)",
        nargs="+", metavar="NAME")
    opt(p, "--seed", "seeds initialization, region order and augmentation", type=int)
    p.add_argument("--no-augment", dest="augment", action="store_false", default=S,
                   help="no random flips/rotations and colour jitter")
    opt(p, "--jitter", "colour jitter kind", choices=JITTERS)
    opt(p, "--jitter-strength", "spread of the colour jitter", type=float)
    opt(p, "--val-data", "validate on this store instead of --data's 'val' split", metavar="STORE2")
    opt(p, "--val-every", "validate every K steps (0: only at the end)", type=int, metavar="K")
    opt(p, "--ckpt-every", "checkpoint every K steps (0: only at the end)", type=int, metavar="K")
    opt(p, "--keep-every", "also keep the checkpoint of every K-th step as OUT/checkpoints/step-K.pt (0: "
        "none), e.g. to average the last ones", type=int, metavar="K")
    opt(p, "--threshold", "probability threshold of the validation Dice", type=float)
    opt(p, "--device", "cpu, cuda, cuda:N, mps or auto")
    opt(p, "--memory-budget", "the engine's memory budget, e.g. 4GB (default: 1 GiB)")
    opt(p, "--tile", "core tile side, a multiple of the model's stride; overrides the plan", type=int)
    opt(p, "--read-workers", "threads reading and augmenting crops ahead of the model (default: 1 on the CPU, "
        "one per spare core, at most 8, on a GPU)", type=int, metavar="N")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=S, help="no progress bars")
    p.set_defaults(func=_run_train)

    d = subparsers.add_parser(
        "demo",
        help="the end-to-end demo: synthetic data, training, held-out Dice, a predicted slide",
        description=_DEMO_HELP,
        formatter_class=formatter_class,
    )
    d.add_argument("--out", default=DEFAULT_DEMO_OUT, help="output folder")
    d.add_argument("--scale", default=DEFAULT_DEMO_SCALE, choices=DEMO_SCALES,
                   help="small: minutes on a laptop; paper: the paper's 16000 x 64000 regions")
    d.add_argument("--device", default=DEFAULT_DEVICE, help="cpu, cuda, cuda:N, mps or auto")
    d.add_argument("--seed", type=int, default=_DEFAULTS["seed"], help="seed of the data and the training")
    d.add_argument("--memory-budget", default=None,
                   help="the engine's memory budget, e.g. 4GB; None: the engine's default, 1 GiB")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    # hidden, for tests and tuning
    d.add_argument("--regions", type=int, default=None, help=S)
    d.add_argument("--val-regions", type=int, default=None, help=S)
    d.add_argument("--size", default=None, help=S)
    d.add_argument("--slide-size", default=None, help=S)
    d.add_argument("--steps", type=int, default=None, help=S)
    d.add_argument("--lr", type=float, default=None, help=S)
    d.add_argument("--preset", default=None, help=S)
    d.set_defaults(func=_run_demo)


def _given(args) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("func", "command")}


def train_config(args) -> TrainConfig:
    """The TrainConfig of parsed ``gigaseg train`` arguments: TrainConfig's defaults, then the
    --config file's options, then the flags given; or, with --resume, the run's own."""
    from ..errors import ConfigError

    given = _given(args)
    config_file = given.pop("config", None)
    run_dir = given.pop("resume", None)
    if run_dir is not None:
        from ..training import resume_config

        if config_file is not None:
            raise ConfigError(f"--resume {run_dir} continues a run with its own options; drop --config {config_file}")
        if "out" in given and given["out"] != run_dir:
            raise ConfigError(f"--resume {run_dir} continues in its own folder; drop --out {given['out']}")
        given.pop("out", None)
        return resume_config(run_dir, **given)
    values = {}
    if config_file is not None:
        values = TrainConfig.from_json(config_file).to_dict()
        values["resume"] = None  # a new run with those options; --resume is how a run continues
    if "init" in given and "preset" in given:
        raise ConfigError(f"give --init {given['init']} or --preset {given['preset']}, not both: with --init the "
                          "architecture is the init model's")
    values.update(given)
    for required in ("data", "out"):
        if not values.get(required):
            raise ConfigError(f"give --{required} (or --resume RUN_DIR to continue a run)")
    return TrainConfig.from_dict(values)


def _run_train(args) -> int:
    from ..training import train

    config = train_config(args)
    try:
        result = train(config)
    except KeyboardInterrupt:
        import os
        from pathlib import Path

        writer = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 saves and reports
        if writer and (config.out is None or not (Path(config.out) / "checkpoint.pt").exists()):
            print("gigaseg train: interrupted before its first checkpoint; nothing to resume: the same command "
                  "starts the run again from step 0", file=sys.stderr)
        return 130  # otherwise train() saved the last completed step and printed how to resume
    if result.get("rank", 0) != 0:  # under torchrun, rank 0 reports
        return 0
    mean, sd = result["val_dice_mean"], result["val_dice_sd"]
    val = f"; held-out Dice {mean:.4f} +/- {sd:.4f}" if mean is not None else ""
    if result.get("val_class_dice"):
        per_class = ", ".join(f"{name} {'-' if d is None else format(d, '.4f')}"
                              for name, d in result["val_class_dice"].items())
        val += f" (the regions' mean over classes); per class over all held-out regions: {per_class}"
    print(f"trained {result['step']} steps in {result['seconds']:.0f} s "
          f"({result['seconds_per_step']:.2f} s/step){val}; checkpoint {result['checkpoint']}", file=sys.stderr)
    return 0


def _run_demo(args) -> int:
    from ..demo import run_demo
    from ..prepare import parse_size

    overrides = {}
    if args.regions is not None:
        overrides["train_regions"] = args.regions
    if args.val_regions is not None:
        overrides["val_regions"] = args.val_regions
    if args.size is not None:
        overrides["size"] = parse_size(args.size)
    if args.slide_size is not None:
        overrides["slide_size"] = parse_size(args.slide_size)
    for name in ("steps", "lr", "preset", "memory_budget"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    try:
        summary = run_demo(args.out, scale=args.scale, device=args.device, seed=args.seed,
                           progress=not args.no_progress, **overrides)
    except KeyboardInterrupt:
        print(f"gigaseg demo: interrupted; nothing in {args.out} is complete", file=sys.stderr)
        return 130
    print(summary["text"])
    print(f"demo outputs in {summary['out']}")
    return 0
