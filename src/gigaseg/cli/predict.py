"""``gigaseg predict``, ``gigaseg evaluate``, ``gigaseg baseline`` and ``gigaseg bench predict``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..options import (
    BASELINE_METHODS,
    BUILTIN_MODEL,
    DEFAULT_BASELINE_METHOD,
    DEFAULT_PRECISION,
    DEFAULT_PREDICT_DEVICE,
    DEFAULT_PRESET,
    DEFAULT_REFERENCE_VALUES,
    DEFAULT_THRESHOLD,
    DEFAULT_WORKING_MPP,
    ORIENTATION_COUNTS,
    PRECISIONS,
    PRESET_NAMES,
    REFERENCE_VALUES,
)
from . import command_parser, feeds, memory_size, number, show_flags

_PREDICT_HELP = """\
Segment tissue on whole slides, in bounded memory, with the built-in tissue model or a trained one.

  gigaseg predict slides/*.svs --out masks/
  gigaseg predict overview.png --mpp 16 --out masks/
  gigaseg predict slides/*.svs --model run/checkpoint.pt --out masks/

The built-in model (docs/model-card.md) ships inside the package; --model takes a checkpoint
written by gigaseg train instead. Each slide is read at the model's resolution (the pyramid
level nearest to it, resampled, upsampling included), segmented strip by strip with the exact
tiled forward pass, and written to --out as <stem>.mask.tiff (pyramidal 8-bit TIFF at the slide's level-0 size and
mpp: 0/255, or probability*255 with --probabilities), <stem>.geojson (QuPath annotations
of class Tissue, level-0 pixels), <stem>.overlay.png and <stem>.json (area, fraction,
pieces, timings). A model of several classes (gigaseg train with --classes) writes each
pixel's class index 0..C-1 into the TIFF, one QuPath classification per class (class 0, the
background, left out) into the GeoJSON, each class in its colour into the overlay, and each
class's area into the summary. SLIDE may be a file, a folder (its slides; a folder of .dcm files is one
DICOM slide) or a quoted glob. Existing outputs are kept unless --overwrite. A slide that
fails is reported at the end and the exit status is 1.
"""

_EVALUATE_HELP = """\
Dice, IoU, precision and recall of predicted masks against reference masks.

  gigaseg evaluate out/a.mask.tiff out/b.mask.tiff --reference ref/a.npy ref/b.png --out eval/

Pairs PRED and --reference in order. Masks: TIFF (pyramidal ok), PNG/JPEG, .npy.
References: bool, 0/1, or 0/1/255 where 255 is ignored; 0/255 (255 = tissue) with
--reference-values 0/255, since a file of only 0 and 255 could mean either (gigaseg's own
mask TIFFs are 0/255 = tissue and need no option). Predictions: bool, 0/1, 0/255, or
probabilities (round(255 p), or floats in [0, 1]) thresholded by --threshold. Other values
are refused. A prediction of another resolution is compared at the reference's (nearest
neighbour, with a warning); another aspect ratio is an error. Prints a table; --out writes
evaluate.json and evaluate.csv (never over an input).
"""

_BASELINE_HELP = """\
Non-learned tissue segmentation, with the same outputs as gigaseg predict.

  gigaseg baseline slides/*.svs --method saturation --out baselines/

otsu: grey level below Otsu's threshold is tissue. saturation: HSV saturation, 7x7 median
blur, Otsu, morphological closing. Run at --working-mpp (default 8 um/px; never finer than
the slide).
"""


def _common_outputs(p) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--mpp", type=number("mpp"), default=None,
                   help="level-0 um/px of the slides, replacing what the files say (needed for PNG/JPEG)")
    p.add_argument("--min-area", type=number("min_area"), default=None, metavar="UM2",
                   help="smallest tissue piece and hole kept in the GeoJSON, square microns (default 2500)")
    p.add_argument("--simplify", type=number("simplify"), default=None, metavar="UM",
                   help="GeoJSON simplification tolerance in microns (default: half a mask pixel; 0: none)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (never an input of the run: that is refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--strict", action="store_true",
                   help="fail a slide on any problem of its data (corrupt JPEG data, a decoder's warning, a greyscale "
                        "or 16-bit image converted to RGB) instead of a warning in its summary and on stderr")
    feeds(p, out="out_dir")  # messages name the library's parameters: NOTE [Parameters and flags]


def _precision_option(p) -> None:
    p.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                   help="bfloat16: PyTorch's bfloat16 kernels (1.2-1.6x its float32 ones on CPUs with "
                        "AVX512-BF16/AMX), probabilities within a few hundredths of float32's; float32 on the CPU "
                        "uses gigaseg's compiled kernels, faster still (default: float32, exact)")


def _read_workers_option(p) -> None:
    p.add_argument("--read-workers", type=number("read_workers"), default=None, metavar="N",
                   help="threads decoding slide crops ahead of the model (default: 1 on the CPU; on a GPU one "
                        "per spare core, at most 8)")


def _shard(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N), checked: 0 <= I < N."""
    import argparse

    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N, e.g. 0/4 for the first of 4 shares") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"{text!r}: I must be in 0..N-1, e.g. 0/{max(n, 1)}")
    return i, n


def register(subparsers, formatter_class) -> None:
    p = subparsers.add_parser("predict", help="segment tissue on whole slides (built-in model or a trained one)",
                              description=_PREDICT_HELP, formatter_class=formatter_class)
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files, folders or globs")
    p.add_argument("--model", default=BUILTIN_MODEL, metavar="PATH",
                   help="a checkpoint of gigaseg train (or a weights file) instead of the built-in tissue model")
    _common_outputs(p)
    p.add_argument("--threshold", type=number("threshold"), default=DEFAULT_THRESHOLD,
                   help="tissue = probability >= threshold, in (0, 1)")
    p.add_argument("--probabilities", action="store_true", help="mask TIFF holds probability*255 instead of 0/255")
    p.add_argument("--model-mpp", type=number("model_mpp"), default=None,
                   help="run the model at this um/px instead of the checkpoint's training mpp")
    p.add_argument("--memory-budget", type=memory_size, default=None,
                   help="engine memory budget, e.g. 1GB, at least 256MiB (default: the planner's)")
    p.add_argument("--device", default=DEFAULT_PREDICT_DEVICE, help="cpu, cuda, mps or auto")
    p.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                   help="predict only share I of N (0 <= I < N) of the slides, e.g. one task of a SLURM job "
                        "array: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT (docs/distributed.md)")
    p.add_argument("--no-glass-balance", dest="glass_balance", action="store_false",
                   help="read the slides as they are, even with a model that brightens grey or tinted glass to "
                        "white first (the built-in one): for images with no glass, such as crops wholly inside "
                        "tissue, whose palest tissue it would take for glass")
    p.add_argument("--no-component-filter", dest="component_filter", action="store_false",
                   help="keep every piece of the mask, even those the model's component filter takes for debris "
                        "on the glass (the built-in model has one; docs/predict.md)")
    p.add_argument("--fill-holes", type=number("fill_holes"), default=None, metavar="UM",
                   help="make the mask's holes narrower than this many microns tissue (default: the model's width; "
                        "the built-in model's is 100, the definition of tissue's; 0: none; docs/predict.md)")
    p.add_argument("--drop-specks", type=number("drop_specks"), default=None, metavar="UM",
                   help="drop the mask's pieces smaller than a square of this many microns (default: the model's "
                        "size; the built-in model's is 100, the definition of tissue's specks; 0: none; "
                        "docs/predict.md)")
    p.add_argument("--edge-trim", type=number("edge_trim"), default=None, metavar="RATIO",
                   help="drop the pixels of the mask's outline with less than this share of the optical density of "
                        "the tissue beside them (default: the model's ratio; the built-in model's is 0.4; 0: none; "
                        "docs/predict.md)")
    p.add_argument("--no-seam-correction", dest="seam_correction", action="store_false",
                   help="leave a scanner's tiles or stripes of darker or tinted glass as they are; a model with a "
                        "glass balance (the built-in one) otherwise evens them out (docs/predict.md)")
    p.add_argument("--orientations", type=int, choices=ORIENTATION_COUNTS, default=1, metavar="N",
                   help="1, 2, 4 or 8: average the model over N orientations of each slide (turned, mirrored; "
                        "test-time augmentation), N times the model's time (default 1: the slide as it is)")
    _precision_option(p)
    _read_workers_option(p)
    p.set_defaults(func=_run_predict)


    e = subparsers.add_parser("evaluate", help="Dice/IoU/precision/recall of masks against references",
                              description=_EVALUATE_HELP, formatter_class=formatter_class)
    e.add_argument("preds", nargs="+", metavar="PRED", help="predicted masks")
    e.add_argument("--reference", nargs="+", required=True, metavar="REF", help="one reference mask per PRED")
    e.add_argument("--threshold", type=number("threshold"), default=DEFAULT_THRESHOLD,
                   help="for probability masks: tissue = value/255 >= this, in (0, 1)")
    e.add_argument("--reference-values", default=DEFAULT_REFERENCE_VALUES, choices=REFERENCE_VALUES,
                   help="how to read the references' values: 0/1/255 (255 = ignore), 0/255 (255 = tissue), or auto "
                        "(decided from the values; 0/255-only references are refused as ambiguous, except "
                        "gigaseg's own mask TIFFs)")
    e.add_argument("--out", default=None, metavar="DIR", help="write evaluate.json and evaluate.csv here")
    feeds(e, out="out_dir", reference="refs")
    e.set_defaults(func=_run_evaluate)

    b = subparsers.add_parser("baseline", help="non-learned tissue masks (Otsu, saturation)",
                              description=_BASELINE_HELP, formatter_class=formatter_class)
    b.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files, folders or globs")
    b.add_argument("--method", default=DEFAULT_BASELINE_METHOD, choices=BASELINE_METHODS, help="baseline method")
    b.add_argument("--working-mpp", type=number("working_mpp"), default=DEFAULT_WORKING_MPP,
                   help="resolution the method runs at, um/px")
    _common_outputs(b)
    b.set_defaults(func=_run_baseline)


def register_bench(bench_subparsers, formatter_class) -> None:
    b = bench_subparsers.add_parser(
        "predict",
        help="whole-slide prediction throughput (MP/s at the model resolution)",
        description=(
            "Write a synthetic slide (gigaseg.synth.write_slide, 0.5 um/px) of --size HxW, then predict it with "
            "an untrained model of --preset (or --checkpoint) at 0.5 um/px into a temporary folder. "
            "Reports megapixels per second "
            "at the model resolution end to end and split into read, model and write, and peak memory. "
            "Prints one JSON object."
        ),
        formatter_class=formatter_class,
    )
    b.add_argument("--size", default="16000x64000", metavar="HxW", help="slide HEIGHTxWIDTH (level 0 = model res)")
    b.add_argument("--preset", default=DEFAULT_PRESET, choices=PRESET_NAMES, help="model preset (untrained)")
    b.add_argument("--checkpoint", default=None,
                   help="a trained checkpoint instead of the untrained preset (run at 0.5 um/px all the same)")
    b.add_argument("--memory-budget", default=None, help="engine memory budget")
    b.add_argument("--slide", default=None,
                   help="reuse this slide instead of writing one (its mpp must be in the file)")
    b.add_argument("--keep-slide", default=None, metavar="PATH", help="write the synthetic slide here and keep it")
    b.add_argument("--dir", default=None, help="scratch directory (default: the system temp dir)")
    b.add_argument("--json", action="store_true", help="accepted for symmetry: the output is always JSON")
    b.add_argument("--device", default=DEFAULT_PREDICT_DEVICE, help="cpu, cuda, mps or auto")
    _precision_option(b)
    _read_workers_option(b)
    b.set_defaults(func=_run_bench)


def _config(args, command: str, extra: dict) -> dict:
    from .. import __version__
    from .._runinfo import utc_now

    return {"command": command, "gigaseg_version": __version__, "time": utc_now(),
            "args": {k: v for k, v in vars(args).items() if k != "func"}, **extra}


def _sweep(out: Path, command: str) -> None:
    """Remove the temporary folders of earlier runs that were killed (NOTE [Stale temporaries]), saying so."""
    from ..outputs import sweep_temporaries

    for path in sweep_temporaries(out):
        print(f"gigaseg {command}: removed {path}: the temporary folder of an earlier run that was killed",
              file=sys.stderr)


def _report(summaries, failures, command: str) -> int:
    for s in summaries:
        if s.get("skipped"):
            print(f"{s['slide']}\tkept (complete outputs exist; --overwrite replaces them)", file=sys.stderr)
        else:
            if "class_area_mm2" in s:  # a model of several classes: each one's area (k >= 1)
                areas = "\t".join(f"{name} {area:.3f} mm2" for name, area in list(s["class_area_mm2"].items())[1:])
                print(f"{s['slide']}\t{areas}\t{s['pieces']} pieces\t{s['timings']['total_s']:.1f} s\t"
                      f"{s['paths']['mask']}")
            else:
                print(f"{s['slide']}\t{s['tissue_area_mm2']:.3f} mm2\tfraction {s['tissue_fraction']:.3f}\t"
                      f"{s['pieces']} pieces\t{s['timings']['total_s']:.1f} s\t{s['paths']['mask']}")
            if s.get("redone"):
                print(f"gigaseg {command}: {s['slide']}: done again, {s['redone']}", file=sys.stderr)
            for warning in s.get("warnings", []):  # NOTE [Slide problems]; --strict makes them errors
                print(f"gigaseg {command}: warning: {s['slide']}: {warning}", file=sys.stderr)
    if failures:
        print(f"gigaseg {command}: {len(failures)} slide(s) failed:", file=sys.stderr)
        parser = command_parser(command)
        for slide, msg in failures:
            print(f"  {slide}: {show_flags(msg, parser)}", file=sys.stderr)
        return 1
    return 0


def _refuse_old_model_argument(args) -> None:
    """gigaseg 0.1 took the checkpoint as the first positional argument; say how to write it now."""
    from ..errors import ConfigError

    first = Path(args.slides[0])
    if args.model == BUILTIN_MODEL and first.suffix.lower() in (".pt", ".pth", ".ckpt", ".npz") and first.is_file():
        rest = " ".join(args.slides[1:]) or "SLIDE..."
        raise ConfigError(f"{first} is a model, not a slide: the model is now given with --model "
                          f"(gigaseg predict {rest} --model {first} --out {args.out}); without --model "
                          "the built-in tissue model is used")


def _run_predict(args) -> int:
    from .._atomic import write_json_atomic
    from ..outputs import DEFAULT_MIN_AREA, expand_slide_paths, run_config_path
    from ..predict import predict_sharded, reports_here

    _refuse_old_model_argument(args)
    slides = expand_slide_paths(args.slides)
    out = Path(args.out)
    _sweep(out, "predict")
    # predict_slides checks the slides' outputs against the inputs, then creates --out, then loads the model
    # under torchrun each rank predicts its share of the slides and gets every slide's result (docs/distributed.md)
    summaries, failures = predict_sharded(
        args.model, slides, out, mpp=args.mpp, threshold=args.threshold, probabilities=args.probabilities,
        min_area=DEFAULT_MIN_AREA if args.min_area is None else args.min_area, simplify=args.simplify,
        memory_budget=args.memory_budget, device=args.device, overwrite=args.overwrite,
        progress=not args.no_progress, model_mpp=args.model_mpp, precision=args.precision,
        read_workers=args.read_workers, strict=args.strict, shard=args.shard, glass_balance=args.glass_balance,
        orientations=args.orientations, component_filter=args.component_filter,
        seam_correction=args.seam_correction, fill_holes=args.fill_holes, drop_specks=args.drop_specks,
        edge_trim=args.edge_trim,
    )
    if not reports_here():  # under torchrun rank 0 writes the run's configuration and the report, and its
        return 0            # status is the run's (another rank's status 1 would make torchrun stop rank 0)
    config_path = run_config_path(out, "predict")
    if args.shard is not None:  # the tasks of a job array share --out: one configuration each
        config_path = config_path.with_name(f"predict-config.shard-{args.shard[0]}-of-{args.shard[1]}.json")
    write_json_atomic(config_path, _config(args, "predict", {
        "slides": [str(s) for s in slides], "failures": [{"slide": s, "error": m} for s, m in failures]}))
    return _report(summaries, failures, "predict")


def _run_baseline(args) -> int:
    from .._atomic import write_json_atomic
    from ..baseline import baseline_slides
    from ..outputs import expand_slide_paths, run_config_path

    slides = expand_slide_paths(args.slides)
    out = Path(args.out)
    _sweep(out, "baseline")
    summaries, failures = baseline_slides(
        slides, out, method=args.method, mpp=args.mpp, working_mpp=args.working_mpp, min_area=args.min_area,
        simplify=args.simplify, overwrite=args.overwrite, strict=args.strict)
    write_json_atomic(run_config_path(out, "baseline"), _config(args, "baseline", {
        "slides": [str(s) for s in slides], "failures": [{"slide": s, "error": m} for s, m in failures]}))
    return _report(summaries, failures, "baseline")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _run_evaluate(args) -> int:
    import warnings

    from ..metrics import METRICS, evaluate_pairs, evaluation_paths, write_evaluation
    from ..outputs import refuse_inputs

    if args.out:  # before any mask is read
        refuse_inputs(evaluation_paths(args.out).values(), [*args.preds, *args.reference])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = evaluate_pairs(args.preds, args.reference, threshold=args.threshold,
                                reference_values=args.reference_values)
    for w in caught:
        print(f"gigaseg evaluate: warning: {w.message}", file=sys.stderr)
    print("\t".join(["prediction", *METRICS]))
    for r in report["per_slide"]:
        print("\t".join([r["prediction"], *(_fmt(r[k]) for k in METRICS)]))
    print("\t".join(["mean +/- sd", *(f"{_fmt(report['mean'][k])} +/- {_fmt(report['sd'][k])}" for k in METRICS)]))
    if args.out:
        write_evaluation(args.out, report, extra=_config(args, "evaluate", {}))
    return 0


def _run_bench(args) -> int:
    from ..bench.predict import bench_predict
    from ..prepare import parse_size

    w, h = parse_size(args.size)
    print(json.dumps(bench_predict(
        h, w, preset_name=args.preset, checkpoint=args.checkpoint, memory_budget=args.memory_budget,
        slide=args.slide, keep_slide=args.keep_slide, scratch_dir=args.dir, device=args.device,
        precision=args.precision, read_workers=args.read_workers,
    )))
    return 0
