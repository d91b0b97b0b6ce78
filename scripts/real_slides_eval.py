"""Predict, run both baselines and evaluate on the real slides in ../shared/data/real/.

    python scripts/real_slides_eval.py --out results/tissue-model/real-slides        # the built-in model
    python scripts/real_slides_eval.py --model runs/demo/checkpoint.pt --references pseudo --out docs/real-slides

For each real slide (CMU-1-Small-Region.svs, its DICOM copy, kidney-48-5.tif with --kidney-mpp
since the file states none) it runs ``predict_slide`` with the model (default: the built-in
one) and ``baseline_slide`` with otsu and saturation, evaluates every mask against the careful
reference masks (masks/*.reference.png at level 0, 255 ignored; ``--references pseudo``: the
older pseudo-masks at their 1/10 scale), checks the outputs (GeoJSON polygons valid with holes inside
their shells; the mask TIFF opens in OpenSlide with the slide's dimensions), and writes under
--out: README.md (the tables), results.json and the overlays. The resolution study resaves
CMU-1-Small-Region downsampled by each of --downsamples as PNG, predicts it with the matching
--mpp and evaluates it the same way, to show from which input resolution the masks degrade.
The scanner study resaves both slides with their colours changed the way scanners and their
settings differ (--shifts: exposure, white balance, gamma; ``SHIFTS``) and scores them the same
way, to show which masks hold when the glass is not the white the model saw most in training.
``--orientations N`` predicts with the mean over N orientations of each image (NOTE
[Orientations]); ``--orientation-study`` scores both slides resaved in each of the eight
orientations (turned, mirrored; the reference turned with them) and the means over 2, 4 and 8,
to show how much a real-slide score moves with nothing but the slide's orientation.
With ``--synthetic N`` it also scores the model on N held-out synthetic slides of every
category (profile "all", seeds 90000.., 1024 x 1024 at the model's resolution: the held-out
set of the tissue-model study, scripts/tissue_model/; --synthetic-seed for others, such as
slides that no stage has looked at) per category group, each saved as a PNG at the model's
resolution and predicted by ``predict_slide`` like the real slides, and README.md
starts with the targets table of issue 18; the scanner study then scores those slides with each
of --shifts too. Scratch outputs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def _check_outputs(summary: dict) -> dict:
    import openslide
    import shapely
    from shapely.geometry import shape

    checks = {}
    gj = json.loads(Path(summary["paths"]["geojson"]).read_text())
    ok = True
    for f in gj["features"]:
        g = shape(f["geometry"])
        ok &= bool(g.is_valid) and g.geom_type == "Polygon"
        ok &= all(shapely.geometry.Polygon(g.exterior).contains(shapely.geometry.Polygon(h)) for h in g.interiors)
        ok &= f["properties"]["classification"]["name"] == "Tissue"
    checks["geojson_valid"] = ok
    checks["geojson_features"] = len(gj["features"])
    with openslide.OpenSlide(summary["paths"]["mask"]) as o:
        checks["tiff_openslide_dimensions"] = list(o.dimensions)
        checks["tiff_matches_slide"] = list(o.dimensions) == list(summary["slide_dimensions"])
        checks["tiff_levels"] = o.level_count
    return checks


def _evaluate(mask_path, ref_path) -> dict:
    from gigaseg.metrics import evaluate_pair

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_pair(mask_path, ref_path)


def _copy_overlay(src, dst, side: int = 512) -> None:
    """A copy of an overlay PNG at most ``side`` pixels on its long side (keeps docs/ small)."""
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        im.thumbnail((side, side))
        im.save(dst, optimize=True)


#: The scanner study's colour changes: per-channel gains on linear RGB / 255, then a gamma
#: (out = (in * gain) ** gamma): a darker exposure, a cool and a warm white balance, a darker gamma.
SHIFTS = {
    "exposure -10%": ((0.9, 0.9, 0.9), 1.0),
    "cool white balance": ((0.9, 0.95, 1.0), 1.0),
    "warm white balance": ((1.0, 0.97, 0.88), 1.0),
    "gamma 1.25": ((1.0, 1.0, 1.0), 1.25),
}


def shifted(rgb: np.ndarray, name: str) -> np.ndarray:
    """``rgb`` (uint8) with the scanner study's colour change ``name`` (``SHIFTS``)."""
    gains, gamma = SHIFTS[name]
    x = np.clip(rgb.astype(np.float32) / 255 * np.asarray(gains, np.float32), 0, 1) ** gamma
    return np.rint(255 * x).astype(np.uint8)


def _synthetic(run, mpp: float, n: int, tmp: Path, orientations: int = 1, shift: str | None = None,
               first: int | None = None, side: int = 1024) -> dict:
    """Dice per held-out synthetic slide (profile "all", seeds 90000.. or ``first``.., side x side at ``mpp``) and
    per group, of the mask that ``run`` (``gigaseg predict`` with the study's options) writes for the slide saved
    as a PNG at ``mpp``: the product's own path, glass balance, seams, the network, edge trim, component filter,
    specks and holes included; each slide with the colour change ``shift`` (a name of ``SHIFTS``) when given."""
    import tifffile
    from PIL import Image

    _study_path()
    from evaluate import HELD_OUT_SEED, dice, group_scores, held_out, tissue_od

    first = HELD_OUT_SEED if first is None else first
    folder = tmp / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    slides = []
    for seed, cats, rgb, m, _ in held_out(n, side, mpp, first=first):
        png = folder / f"s{seed}.png"
        Image.fromarray(rgb if shift is None else shifted(rgb, shift)).save(png)
        s = run("model", png, folder / "out", mpp, orientations)
        pred = tifffile.imread(s["paths"]["mask"]) >= 128
        slides.append({"seed": seed, "categories": cats, "dice": dice(pred, m == 1),
                       "tissue_od": tissue_od(rgb, m == 1)})  # the faint quarter by the slide as drawn
        print(json.dumps(slides[-1] | ({"shift": shift} if shift else {})), file=sys.stderr)
    return {"mpp": mpp, "side": side, "seeds": [first, first + n - 1], "orientations": orientations,
            "groups": group_scores(slides), "slides": slides}


def _study_path() -> None:
    """Put scripts/tissue_model/ (evaluate.py: the held-out slides and their scoring) on the import path."""
    folder = str(Path(__file__).resolve().parent / "tissue_model")
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _area_mean(a: np.ndarray, f: int) -> np.ndarray:
    """``a`` (H, W[, C]) averaged over f x f blocks (the rows and columns past a whole block dropped): float32."""
    h, w = a.shape[0] // f, a.shape[1] // f
    a = np.asarray(a[:h * f, :w * f], np.float32)
    return a.reshape(h, f, w, f, *a.shape[2:]).mean(axis=(1, 3))


def _synthetic_coarse(run, mpp: float, n: int, factors: list[int], tmp: Path, first: int | None = None,
                      side: int = 1024) -> dict:
    """Dice per group on the held-out synthetic slides read coarser than the model, as a coarse slide or a
    thumbnail is: each slide area-averaged f x f for each f of ``factors``, saved as PNG and predicted by ``run``
    at f times ``mpp`` (read, resampled to the model's resolution, the model, its filter and hole filling, the
    mask TIFF), against its mask averaged the same way (tissue where at least half of the block is)."""
    import tifffile
    from PIL import Image

    _study_path()
    from evaluate import dice, group_scores, held_out, tissue_od

    per: dict[int, list] = {f: [] for f in factors}
    folder = tmp / "coarse"
    folder.mkdir(parents=True, exist_ok=True)
    for seed, cats, rgb, m, _ in held_out(n, side, mpp, first=first):
        for f in factors:
            png = folder / f"s{seed}-x{f}.png"
            Image.fromarray(np.rint(_area_mean(rgb, f)).astype(np.uint8)).save(png)
            s = run("model", png, folder / "out", mpp * f)
            pred = tifffile.imread(s["paths"]["mask"]) >= 128
            per[f].append({"seed": seed, "categories": cats, "dice": dice(pred, _area_mean(m == 1, f) >= 0.5),
                           "tissue_od": tissue_od(rgb, m == 1)})
            print(json.dumps(per[f][-1] | {"downsample": f}), file=sys.stderr)
    return {str(f): {"mpp": mpp * f, "groups": group_scores(per[f]), "slides": per[f]} for f in factors}


def _coarse_lines(results: dict) -> list[str]:
    """README lines of the synthetic slides read coarser than the model."""
    return _group_table(
        "The synthetic slides of the first table area-averaged (a coarse slide or thumbnail), predicted at their "
        "resolution and scored against their masks averaged the same way:", "downsample",
        {f"1 ({results['synthetic']['mpp']:g} um/px, as trained)": results["synthetic"]["groups"],
         **{f"{f} ({v['mpp']:g} um/px)": v["groups"] for f, v in results["synthetic_coarse"].items()}})


def _group_table(intro: str, first: str, rows: dict[str, dict]) -> list[str]:
    """README lines: ``intro``, then a table of each row's Dice per group (the first row's groups that have
    slides) and of its worst slide."""
    groups = [g for g, v in next(iter(rows.values())).items() if v["dice"] is not None]
    lines = ["", intro, "", f"| {first} | " + " | ".join(groups) + " | worst |", "|---" * (len(groups) + 2) + "|"]
    for name, g in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(g[k]["dice"]) for k in groups) + f" | {_fmt(g['all']['min'])} |")
    return lines


def _targets(results: dict) -> list[str]:
    """The targets table of issue 18: the model against each target and the baselines."""
    _study_path()
    from evaluate import HELD_OUT_SEED

    syn = results["synthetic"]["groups"]
    first, last = results["synthetic"]["seeds"]
    kind = "held-out synthetic" if first == HELD_OUT_SEED else f"synthetic seeds {first}-{last}"
    rows = {r["slide"].split(" ")[0].split(".")[0]: r for r in results["slides"] if "DICOM" not in r["slide"]}
    lines = ["| target | required | model | otsu | saturation | met |", "|---|---|---|---|---|---|"]
    for g, v in syn.items():
        if v["dice"] is None:
            continue
        lines.append(f"| {kind}, {g} ({v['n']} slides; worst {v['min']:.3f}) | >= 0.97 | "
                     f"{v['dice']:.3f} | | | {'yes' if v['dice'] >= 0.97 else 'no'} |")
    for name, floor in (("CMU-1-Small-Region", 0.96), ("kidney-48-5", 0.93)):
        r = rows[name]
        d, o, sa = (r[m]["dice"] for m in ("model", "otsu", "saturation"))
        met = d >= floor and d > o and d > sa
        lines.append(f"| {name} against its reference | >= {floor} and above both baselines | {d:.3f} | {o:.3f} | "
                     f"{sa:.3f} | {'yes' if met else 'no'} |")
    return lines + [""]


def orientation_study(run, name: str, path: Path, mpp: float | None, ref: Path, tmp: Path) -> dict:
    """The model's Dice on ``path`` resaved in each of the eight orientations (``ref`` turned with it),
    and with the mean over the first 2, 4 and 8 of them (``predict_slide(orientations=N)``)."""
    from PIL import Image

    from gigaseg.engine.orient import ORIENTATIONS, Oriented
    from gigaseg.metrics import load_reference
    from gigaseg.slides import open_slide

    with open_slide(path, mpp=mpp) as sl:
        rgb, slide_mpp = np.asarray(sl.read_region((0, 0), 0, sl.dimensions))[..., :3], sl.mpp[0]
    reference = load_reference(ref)[0]  # 0/1, 255 (ignored) kept
    tmp.mkdir(parents=True, exist_ok=True)
    row: dict = {"slide": name.split(" ")[0], "each": {}, "mean_of": {}}

    def turned(a: np.ndarray, o) -> np.ndarray:
        view = Oriented(a, o)
        return view[0:view.shape[0], 0:view.shape[1]]

    for o in ORIENTATIONS:
        tag = o.name.replace(" ", "-")
        Image.fromarray(turned(rgb, o)).save(tmp / f"{tag}.png")
        Image.fromarray(turned(reference, o)).save(tmp / f"{tag}.reference.png")
        s = run("model", tmp / f"{tag}.png", tmp / "model", slide_mpp, 1)
        row["each"][o.name] = _evaluate(s["paths"]["mask"], tmp / f"{tag}.reference.png")["dice"]
    for n in (2, 4, 8):
        row["mean_of"][str(n)] = _evaluate(run("model", path, tmp / f"mean{n}", mpp, n)["paths"]["mask"], ref)["dice"]
    each = list(row["each"].values())
    row["each_min"], row["each_max"], row["each_mean"] = min(each), max(each), float(np.mean(each))
    return row


def _synthetic_shift_lines(results: dict) -> list[str]:
    """README lines of the scanner study on the held-out synthetic slides."""
    return _group_table("The synthetic slides of the first table with the same colour changes, Dice per group (worst "
                        "slide of all):", "change",
                        {"as drawn": results["synthetic"]["groups"], **results["synthetic_shifts"]})


def _orientation_lines(results: dict) -> list[str]:
    """README lines of the orientation study."""
    lines = ["", "## Orientation (both slides resaved turned or mirrored, Dice against the reference turned with them)",
             "", "| slide | as is | each of 8: lowest | highest | mean | mean of 2 | mean of 4 | mean of 8 |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results["orientation_study"]:
        m = row["mean_of"]
        lines.append(f"| {row['slide']} | {_fmt(row['each']['as is'])} | {_fmt(row['each_min'])} | "
                     f"{_fmt(row['each_max'])} | {_fmt(row['each_mean'])} | {_fmt(m['2'])} | {_fmt(m['4'])} | "
                     f"{_fmt(m['8'])} |")
    if "synthetic_orientations" in results:
        groups = list(results["synthetic_orientations"]["1"])
        lines += ["", "Held-out synthetic slides, Dice per group with the mean over N orientations:", "",
                  "| N | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
        for n in ("1", "2", "4", "8"):
            g = results["synthetic_orientations"][n]
            lines.append(f"| {n} | " + " | ".join(_fmt(g[k]) for k in groups) + " |")
    return lines + ["", "\"mean of N\" is `predict_slide(orientations=N)` (`gigaseg predict --orientations N`): the "
                    "mean probability over the first N orientations (NOTE [Orientations]), N times the model's time."]


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", "--checkpoint", dest="checkpoint", default="builtin",
                    help="checkpoint or weights file to evaluate (default: the built-in tissue model)")
    ap.add_argument("--references", choices=("reference", "pseudo"), default="reference",
                    help="score against masks/*.reference.png (default) or the 1/10-scale pseudo-masks")
    ap.add_argument("--synthetic", type=int, default=0, metavar="N",
                    help="also score N held-out synthetic slides per category (48: the study's set)")
    ap.add_argument("--synthetic-seed", type=int, default=None, metavar="SEED",
                    help="first seed of the synthetic slides (default 90000: the study's held-out set, which every "
                         "stage since has looked at; 97000 and up: slides that no stage has; 93000-96047 are the "
                         "fresh draws already quoted)")
    ap.add_argument("--synthetic-side", type=int, default=1024, metavar="PX",
                    help="side of the synthetic slides in pixels at the model's resolution (default 1024, the study's; "
                         "a slide is drawn for its size in microns, so a model at 2 um/px sees the 4 um/px models' "
                         "slides with 2048)")
    ap.add_argument("--synthetic-downsamples", default="", metavar="F,F",
                    help="also score the synthetic slides area-averaged by each of these factors, as a coarse slide "
                         "or thumbnail is read (comma-separated; default: none)")
    ap.add_argument("--out", default="docs/real-slides", help="where README.md, results.json and overlays go")
    ap.add_argument("--data", default=str(REAL), help="the real-data folder")
    ap.add_argument("--kidney-mpp", type=float, default=8.0,
                    help="assumed um/px of kidney-48-5.tif (the file states none)")
    ap.add_argument("--downsamples", default="1,2,4,8,16,32,64",
                    help="resolution study: CMU downsample factors (comma-separated; '' for none)")
    ap.add_argument("--shifts", default=",".join(SHIFTS),
                    help="scanner study: the colour changes to score (comma-separated names of SHIFTS; '' for none)")
    ap.add_argument("--orientations", type=int, choices=(1, 2, 4, 8), default=1,
                    help="predict with the mean over this many orientations of each image (NOTE [Orientations])")
    ap.add_argument("--orientation-study", action="store_true",
                    help="also score both slides in each of the eight orientations, and the means over 2, 4 and 8")
    ap.add_argument("--no-component-filter", dest="component_filter", action="store_false",
                    help="predict without the model's component filter (gigaseg predict --no-component-filter)")
    ap.add_argument("--no-seam-correction", dest="seam_correction", action="store_false",
                    help="predict without correcting scanner seams (gigaseg predict --no-seam-correction)")
    ap.add_argument("--fill-holes", type=float, default=None, metavar="UM",
                    help="fill the masks' holes narrower than this (gigaseg predict --fill-holes; default: the "
                         "model's width, 0: none)")
    ap.add_argument("--drop-specks", type=float, default=None, metavar="UM",
                    help="drop the masks' pieces smaller than a square of this (gigaseg predict --drop-specks; "
                         "default: the model's size, 0: none)")
    ap.add_argument("--edge-trim", type=float, default=None, metavar="RATIO",
                    help="trim the masks' outline at this ratio (gigaseg predict --edge-trim; default: the model's, "
                         "0: none)")
    ap.add_argument("--no-overlays", dest="overlays", action="store_false",
                    help="write no overlay images (for a study beside a folder that has them)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--note", default="", help="a sentence on where the checkpoint comes from, for README.md")
    args = ap.parse_args(argv)
    copy_overlay = _copy_overlay if args.overlays else lambda src, dst: None
    shifts = [x.strip() for x in args.shifts.split(",") if x.strip()]
    unknown = [x for x in shifts if x not in SHIFTS]
    if unknown:
        ap.error(f"--shifts: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(map(repr, SHIFTS))}")
    try:
        factors = [int(x) for x in args.synthetic_downsamples.split(",") if x.strip()]
    except ValueError:
        factors = [0]
    if any(f < 2 for f in factors):
        ap.error(f"--synthetic-downsamples: whole factors of 2 or more, such as 2,4,8; got "
                 f"{args.synthetic_downsamples!r}")
    if args.synthetic_side < 256:
        ap.error(f"--synthetic-side {args.synthetic_side}: give at least 256 pixels (the study's slides: 1024)")

    from PIL import Image

    from gigaseg.baseline import baseline_slide
    from gigaseg.checkpoint import load_checkpoint, load_model
    from gigaseg.predict import predict_slide
    from gigaseg.slides import open_slide

    data = Path(args.data)
    if not data.is_dir():
        print(f"real data not found at {data}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net, trained_mpp = load_model(args.checkpoint, device=args.device)
    payload = load_checkpoint(args.checkpoint)
    step = payload.get("step", (payload.get("info") or {}).get("step"))  # a weights file keeps it in its info
    ck_info = {"path": str(args.checkpoint), "mpp": payload.get("mpp"), "step": step,
               "config": payload.get("config")}
    if args.references == "reference":
        cmu_ref = data / "masks" / "CMU-1-Small-Region.reference.png"
        kidney_ref = data / "masks" / "kidney-48-5.reference.png"
        ref_words = ("the careful reference masks `../shared/data/real/masks/*.reference.png` (level 0, the "
                     "definition of tissue in SOURCES.md there; 255 ignored)")
    else:
        cmu_ref = data / "masks" / "tissue-mask-cmu-1-small-region.npy"
        kidney_ref = data / "masks" / "tissue-mask-kidney-48-5.npy"
        ref_words = ("the pseudo-masks in `../shared/data/real/masks` (histolab's algorithmic tissue masks at 1/10 "
                     "scale, not manual annotations)")
    slides = [
        ("CMU-1-Small-Region.svs", data / "slides" / "CMU-1-Small-Region.svs", None, cmu_ref),
        ("CMU-1-Small-Region (DICOM)", data / "dicom" / "cmu-1-small-region", None, cmu_ref),
        (f"kidney-48-5.tif (--mpp {args.kidney_mpp:g}, assumed)", data / "slides" / "kidney-48-5.tif",
         args.kidney_mpp, kidney_ref),
    ]
    def run(method: str, path: Path, od: Path, mpp: float | None, orientations: int = args.orientations) -> dict:
        """``method``'s outputs for ``path`` in ``od``: the model's (predict_slide) or a baseline's; the summary."""
        if method == "model":
            return predict_slide(net, path, od, mpp=mpp, model_mpp=trained_mpp, device=args.device, progress=False,
                                 overwrite=True, orientations=orientations, component_filter=args.component_filter,
                                 seam_correction=args.seam_correction, fill_holes=args.fill_holes,
                                 drop_specks=args.drop_specks, edge_trim=args.edge_trim)
        return baseline_slide(path, od, method=method, mpp=mpp, overwrite=True)

    tmp = Path(tempfile.mkdtemp(prefix="gigaseg-real-"))
    results = {"checkpoint": ck_info, "references": args.references, "orientations": args.orientations,
               "component_filter": args.component_filter, "seam_correction": args.seam_correction,
               "fill_holes": args.fill_holes, "drop_specks": args.drop_specks, "edge_trim": args.edge_trim,
               "slides": [], "resolution_study": [], "scanner_study": [], "orientation_study": []}
    try:
        for name, path, mpp, ref in slides:
            row = {"slide": name, "path": os.path.relpath(path)}  # no machine's folders in the record
            for method in ("model", "otsu", "saturation"):
                od = tmp / method / path.name
                t0 = time.perf_counter()
                s = run(method, path, od, mpp)
                dt = time.perf_counter() - t0
                ev = _evaluate(s["paths"]["mask"], ref)
                row[method] = {"dice": ev["dice"], "iou": ev["iou"], "precision": ev["precision"],
                               "recall": ev["recall"], "tissue_fraction": s["tissue_fraction"],
                               "tissue_area_mm2": s["tissue_area_mm2"], "pieces": s["pieces"], "seconds": round(dt, 2),
                               "checks": _check_outputs(s)}
                stem = path.name.replace(".", "_")
                copy_overlay(s["paths"]["overlay"], out / f"{stem}.{method}.overlay.png")
                row[method]["overlay"] = f"{stem}.{method}.overlay.png"
            results["slides"].append(row)
            print(json.dumps({k: (v if not isinstance(v, dict) else {kk: v[kk] for kk in ("dice", "seconds")})
                              for k, v in row.items()}), file=sys.stderr)

        # resolution study: CMU-1-Small-Region resaved at coarser resolutions as PNG
        with open_slide(data / "slides" / "CMU-1-Small-Region.svs") as sl:
            mpp0 = sl.mpp[0]
            l0_w, l0_h = sl.dimensions
            for d in (float(x) for x in args.downsamples.split(",") if x.strip()):
                t_mpp = mpp0 * d
                w, h = max(1, round(l0_w / d)), max(1, round(l0_h / d))
                png = tmp / "study" / f"cmu-ds{d:g}.png"
                png.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(sl.read_region_at_mpp((0, 0), t_mpp, (w, h))).save(png)
                row = {"downsample": d, "mpp": round(t_mpp, 4), "size": [w, h]}
                for method in ("model", "otsu", "saturation"):
                    s = run(method, png, tmp / "study" / method, t_mpp)
                    row[method] = _evaluate(s["paths"]["mask"], cmu_ref)["dice"]
                    if method == "model":
                        copy_overlay(s["paths"]["overlay"], out / f"cmu-ds{d:g}.model.overlay.png")
                        # agreement with the finest input's mask, at the finest input's resolution
                        import tifffile

                        full_ref = tmp / "study" / "model-finest.npy"
                        if not full_ref.exists():
                            np.save(full_ref, tifffile.imread(s["paths"]["mask"]) == 255)
                        row["model_vs_finest"] = _evaluate(s["paths"]["mask"], full_ref)["dice"]
                results["resolution_study"].append(row)
                print(json.dumps(row), file=sys.stderr)
        # scanner study: both slides with their colours changed, resaved as PNG at their resolution
        for name, path, mpp, ref in (slides[0], slides[2]):
            if not shifts:
                break
            with open_slide(path, mpp=mpp) as sl:
                rgb, slide_mpp = np.asarray(sl.read_region((0, 0), 0, sl.dimensions))[..., :3], sl.mpp[0]
            for shift in shifts:
                png = tmp / "scanner" / f"{path.stem}-{shift.replace(' ', '-').replace('%', '')}.png"
                png.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(shifted(rgb, shift)).save(png)
                row = {"slide": name.split(" ")[0], "shift": shift}
                for method in ("model", "otsu", "saturation"):
                    s = run(method, png, tmp / "scanner" / method, slide_mpp)
                    row[method] = _evaluate(s["paths"]["mask"], ref)["dice"]
                results["scanner_study"].append(row)
                print(json.dumps(row), file=sys.stderr)
        # orientation study: both slides resaved turned or mirrored (their references with them), then the means
        for name, path, mpp, ref in (slides[0], slides[2]) if args.orientation_study else ():
            results["orientation_study"].append(orientation_study(run, name, path, mpp, ref, tmp / "orient"))
            print(json.dumps(results["orientation_study"][-1]), file=sys.stderr)
        if args.synthetic:
            def synthetic(orientations: int, shift: str | None = None) -> dict:
                return _synthetic(run, trained_mpp, args.synthetic, tmp, orientations, shift, args.synthetic_seed,
                                  args.synthetic_side)

            results["synthetic"] = synthetic(args.orientations)
            if args.orientation_study:
                results["synthetic_orientations"] = {
                    str(n): {g: v["dice"] for g, v in synthetic(n)["groups"].items()}
                    for n in (1, 2, 4, 8) if n != args.orientations}
                results["synthetic_orientations"][str(args.orientations)] = {
                    g: v["dice"] for g, v in results["synthetic"]["groups"].items()}
            if shifts:  # the scanner study on the held-out slides
                results["synthetic_shifts"] = {shift: synthetic(args.orientations, shift)["groups"] for shift in shifts}
            if factors:
                results["synthetic_coarse"] = _synthetic_coarse(run, trained_mpp, args.synthetic, factors, tmp,
                                                                args.synthetic_seed, args.synthetic_side)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# Real slides: model vs baselines", ""]
    if "synthetic" in results:
        lines += _targets(results)
    lines += [
        f"Checkpoint: `{ck_info['path']}` (training mpp {ck_info['mpp']}, step {ck_info['step']}). "
        + (f"{args.note.strip()} " if args.note else "") +
        f"References: {ref_words}. Made by `scripts/real_slides_eval.py`.",
        "",
        "| slide | method | Dice | IoU | precision | recall | tissue fraction | pieces | s | GeoJSON valid "
        "| TIFF opens, slide size |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["slides"]:
        for method in ("model", "otsu", "saturation"):
            r = row[method]
            c = r["checks"]
            lines.append(
                f"| {row['slide']} | {method} | {_fmt(r['dice'])} | {_fmt(r['iou'])} | {_fmt(r['precision'])} | "
                f"{_fmt(r['recall'])} | {r['tissue_fraction']:.3f} | {r['pieces']} | {r['seconds']:.1f} | "
                f"{'yes' if c['geojson_valid'] else 'NO'} | {'yes' if c['tiff_matches_slide'] else 'NO'} |"
            )
    lines += ["", "## Input resolution (CMU-1-Small-Region resaved as PNG, Dice against the reference)", "",
              "| downsample | um/px | size (w x h) | model | otsu | saturation | model vs its own finest mask |",
              "|---|---|---|---|---|---|---|"]
    for row in results["resolution_study"]:
        lines.append(f"| {row['downsample']:g} | {row['mpp']:g} | {row['size'][0]} x {row['size'][1]} | "
                     f"{_fmt(row['model'])} | {_fmt(row['otsu'])} | {_fmt(row['saturation'])} | "
                     f"{_fmt(row['model_vs_finest'])} |")
    lines += ["", "The last column is the Dice of the model's mask for the downsampled input against its mask for the "
              "first (finest) input, at the finest input's resolution: it shows how much boundary detail is lost, "
              "which the 1/10-scale pseudo-mask (about 5 um/px) cannot resolve."]
    if results["scanner_study"]:
        lines += ["", "## Scanner colours (both slides with their colours changed, resaved as PNG; Dice against the "
                  "reference)", "", "| slide | change | model | otsu | saturation |", "|---|---|---|---|---|"]
        for row in results["scanner_study"]:
            lines.append(f"| {row['slide']} | {row['shift']} | {_fmt(row['model'])} | {_fmt(row['otsu'])} | "
                         f"{_fmt(row['saturation'])} |")
        lines += ["", "A change multiplies RGB / 255 by a gain per channel, then raises it to a power (`SHIFTS` in "
                  "the script): how scanners' exposure and white balance differ. The slides as scanned are in the "
                  "first table."]
    if "synthetic_shifts" in results:
        lines += _synthetic_shift_lines(results)
    if "synthetic_coarse" in results:
        lines += _coarse_lines(results)
    if results["orientation_study"]:
        lines += _orientation_lines(results)
    if args.overlays:
        lines += ["", "Overlays: " + ", ".join(f"`{p.name}`" for p in sorted(out.glob("*.overlay.png")))]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
