"""Make the built-in tissue model from a study run: src/gigaseg/weights/tissue.npz.

    python scripts/tissue_model/ship.py runs/tissue-model/deep-4

Writes the run's checkpoint as a weights file (``gigaseg.checkpoint.save_weights``: arrays and
JSON, read without pickle) with its provenance in ``info``: the run, its step, its training
options and the commit of the code that trained it. docs/model-card.md describes it. The
convolution weights are stored in ``--bits`` bits with a scale per kernel (default 6, NOTE
[Quantized weights] in gigaseg/checkpoint.py; 16 keeps float16). The shipped model balances
its input's glass (``--glass-white``, default 250; NOTE [Glass balance] in gigaseg/glass.py).
``--checkpoint FILE`` ships another checkpoint of the run instead of its last one, e.g. the mean
of its last checkpoints (average.py): the info then lists the files it averages.
``--component-filter FILE`` stores the component filter that component_filter.py fitted (its JSON)
in the file's header (NOTE [Component filter] in gigaseg/components.py), and ``--fill-holes UM``
the width under which the holes of the model's masks are filled (NOTE [Hole filling] in
gigaseg/holes.py; the built-in model: 100, the definition of tissue's), ``--drop-specks UM`` the
size under which their pieces are dropped (NOTE [Specks], the same file; the built-in model: 100)
and ``--edge-trim RATIO`` their outline's trim (NOTE [Edge trim] in gigaseg/edges.py; the built-in
model: 0.4). ``--update FILE`` sets only these in a weights file that exists, its weights as they are:

    python scripts/tissue_model/ship.py --update src/gigaseg/weights/tissue.npz --drop-specks 100 --edge-trim 0.4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "src" / "gigaseg" / "weights" / "tissue.npz"


def main(argv=None) -> int:
    from gigaseg.cli import number  # the same rule for each value as gigaseg predict's option of that name

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", help="a study run folder (checkpoint.pt, config.json)")
    ap.add_argument("--update", default=None, metavar="FILE",
                    help="set --component-filter, --fill-holes, --drop-specks and --edge-trim in this weights file "
                         "and ship nothing else")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--checkpoint", default=None,
                    help="the checkpoint to ship (default: the run's checkpoint.pt), e.g. average.py's")
    ap.add_argument("--bits", type=int, default=6,
                    help="bits per convolution weight, 2-8, or 16 for float16 (default 6: the built-in model's "
                         "scores as float16 within 0.001 at 40%% of the size)")
    ap.add_argument("--glass-white", type=float, default=250.0,
                    help="the shipped model balances its input's glass to this brightness (UNetConfig.glass_white, "
                         "NOTE [Glass balance] in gigaseg/glass.py; default 250, the white glass of the training "
                         "slides; 0: off)")
    ap.add_argument("--component-filter", default=None,
                    help="the JSON of component_filter.py: its filter is stored with the weights")
    ap.add_argument("--fill-holes", type=number("fill_holes"), default=None, metavar="UM",
                    help="store this hole width in microns with the weights: gigaseg predict fills the holes of "
                         "the model's masks narrower than it (the built-in model: 100)")
    ap.add_argument("--drop-specks", type=number("drop_specks"), default=None, metavar="UM",
                    help="store this speck size in microns with the weights: gigaseg predict drops the pieces of the "
                         "model's masks smaller than a square of it (the built-in model: 100)")
    ap.add_argument("--edge-trim", type=number("edge_trim"), default=None, metavar="RATIO",
                    help="store this edge trim ratio (0-1) with the weights: gigaseg predict drops the pixels of the "
                         "masks' outline paler than it times the tissue beside them (the built-in model: 0.4)")
    args = ap.parse_args(argv)
    if (args.run is None) == (args.update is None):
        ap.error("give a run folder to ship, or --update FILE")
    if args.update:
        _post_processing(args.update, args)
        print(f"updated {args.update}")
        return 0

    import dataclasses

    from gigaseg.checkpoint import load_checkpoint, model_from_checkpoint, save_weights

    run = Path(args.run)
    payload = load_checkpoint(run / "checkpoint.pt")  # the run's: its step and training options
    shipped = load_checkpoint(args.checkpoint) if args.checkpoint else payload
    model, mpp = model_from_checkpoint(shipped, args.checkpoint or run / "checkpoint.pt")
    model.config = dataclasses.replace(model.config, glass_white=args.glass_white)
    averaged = shipped.get("averaged_from") if args.checkpoint else None
    config = json.loads((run / "config.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    train_config = dict(payload.get("train_config") or {})
    for key in ("data", "out", "val_data", "init", "resume"):  # this machine's folders: only their names travel
        if train_config.get(key) and train_config[key] != "builtin":
            path = Path(train_config[key])
            train_config[key] = path.parent.name if path.name == "checkpoint.pt" else path.name
    result = dict(config.get("result") or {})
    for key in ("run_dir", "checkpoint"):
        if result.get(key):
            result[key] = Path(result[key]).name
    info = {"name": "gigaseg tissue model", "run": run.name, "step": payload.get("step"),
            "train_config": train_config, "result": result,
            "shipped_from_commit": commit, "card": "docs/model-card.md"}
    if averaged:  # the mean of checkpoints of the run (average.py): their names travel
        info["averaged_from"] = [Path(c).name for c in averaged]
    save_weights(args.out, model, mpp=mpp, info=info, bits=args.bits)
    _post_processing(args.out, args)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size:,} B; step {info['step']}, {mpp} um/px, "
          f"{args.bits} bits per weight, glass_white {args.glass_white:g})")
    return 0


def _post_processing(path, args) -> None:
    """Store the options' component filter, hole width, speck size and edge trim in the weights file ``path``."""
    if args.component_filter:
        from gigaseg.components import ComponentFilter

        with_filter(path, ComponentFilter.from_dict(json.loads(Path(args.component_filter).read_text())["filter"]))
    if args.fill_holes is not None:
        with_holes(path, args.fill_holes)
    if args.drop_specks is not None:
        _with_meta(path, "drop_specks_um", float(args.drop_specks))
    if args.edge_trim is not None:
        _with_meta(path, "edge_trim", float(args.edge_trim))


def with_filter(path, filt) -> None:
    """Store ``filt`` (a ``ComponentFilter``) in the header of the weights file ``path``."""
    _with_meta(path, "component_filter", filt.to_dict())


def with_holes(path, um: float) -> None:
    """Store the hole width ``um`` (microns, NOTE [Hole filling]) in the header of the weights file ``path``."""
    from gigaseg.options import check_number

    _with_meta(path, "fill_holes_um", float(check_number("fill_holes", um)))


def _with_meta(path, key: str, value) -> None:
    """Set ``key`` of the weights file ``path``'s JSON header to ``value``, atomically; its arrays are
    written back byte for byte."""
    import numpy as np

    from gigaseg._atomic import atomic_write

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["__meta__"].item().decode())
        arrays = {k: np.array(z[k]) for k in z.files if k != "__meta__"}
    meta[key] = value
    with atomic_write(Path(path), "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta).encode()), **arrays)


if __name__ == "__main__":
    sys.exit(main())
