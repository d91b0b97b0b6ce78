"""A slide's outputs: their names, the output folder, and writing them whole or not at all.

Shared by prediction (``gigaseg.predict``) and the classic baselines (``gigaseg.baseline``):
``<stem>.mask.tiff``, ``<stem>.geojson``, ``<stem>.overlay.png`` and ``<stem>.json`` (the
summary, written last: it marks the slide as complete).
"""

from __future__ import annotations

import glob as _glob
import json
import math
import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ._deps import require
from .errors import ConfigError, GigasegError, InputError, OutputError, SlideError

__all__ = [
    "DEFAULT_MIN_AREA",
    "THUMB_SIDE",
    "SLIDE_SUFFIXES",
    "RUN_CONFIG_NAMES",
    "output_paths",
    "run_config_path",
    "same_file",
    "refuse_inputs",
    "check_batch",
    "slide_stem",
    "expand_slide_paths",
    "existing_outputs",
    "output_state",
    "check_out_dir",
    "require_writers",
    "temp_dir",
    "sweep_temporaries",
    "TEMP_PREFIX",
    "open_with_mpp",
    "thumbnail",
    "write_outputs",
]

#: Default smallest tissue piece (and hole) kept in the GeoJSON, square microns.
DEFAULT_MIN_AREA = 2500.0
#: Longest side of the overlay thumbnail, pixels.
THUMB_SIDE = 1024
#: File suffixes taken as slides when a folder is given.
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide",
                  ".png", ".jpg", ".jpeg", ".dcm")
_OUTPUT_SUFFIXES = {"mask": ".mask.tiff", "geojson": ".geojson", "overlay": ".overlay.png", "summary": ".json"}


#: The file in which each command records its effective configuration, in its output folder.
RUN_CONFIG_NAMES = {"predict": "predict-config.json", "baseline": "baseline-config.json",
                    "prepare": "prepare-config.json"}


def output_paths(out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """The four output files of a slide: mask, geojson, overlay, summary."""
    out_dir = Path(out_dir)
    return {k: out_dir / f"{stem}{s}" for k, s in _OUTPUT_SUFFIXES.items()}


def run_config_path(out_dir: str | os.PathLike, command: str) -> Path:
    """Where ``command`` ("predict", "baseline", "prepare") records its configuration in ``out_dir``."""
    return Path(out_dir) / RUN_CONFIG_NAMES[command]


# NOTE [Outputs never replace inputs]
# Output names are derived (<stem>.json, <stem>.geojson, predict-config.json, evaluate.csv, ...),
# so an input can sit exactly where an output will go: a slide named predict-config.tif (its
# summary is the run's predict-config.json), two slides with one stem, a GeoJSON given as a slide
# in the output folder. Every command computes all its output paths before any work and refuses
# the run, naming both paths, when one is the same file as an input (same resolved path, or the
# same inode: a hard link) or as another output. `overwrite` replaces earlier outputs, never an
# input. Nothing is renamed silently: the fix (another output folder, a renamed file) is the user's.
def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether paths ``a`` and ``b`` are one file: the same resolved path, or (both existing) the
    same inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_inputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]) -> None:
    """Raise a ConfigError naming both paths when an output would replace an input."""
    ins = [Path(p) for p in inputs if p is not None]
    real = {os.path.realpath(p): p for p in ins}
    inodes = {}
    for p in ins:
        try:
            st = os.stat(p)
        except OSError:
            continue
        inodes[(st.st_dev, st.st_ino)] = p
    for out in outputs:
        hit = real.get(os.path.realpath(out))
        if hit is None:
            try:
                st = os.stat(out)
                hit = inodes.get((st.st_dev, st.st_ino))
            except OSError:
                pass
        if hit is not None:
            raise ConfigError(
                f"the output {out} would replace the input {hit}: an output never replaces an input, "
                "`overwrite=True` included; choose another `out_dir`, or move or rename the input"
            )


def check_batch(slides: Iterable[str | os.PathLike], out_dir: str | os.PathLike, *, command: str | None = None,
                inputs: Iterable[str | os.PathLike] = ()) -> dict[Path, dict[str, Path]]:
    """The output paths of each slide of a batch, checked before any work.

    Refused with a ConfigError naming the paths: two slides with one output name (their outputs
    would overwrite each other), a slide output that is ``command``'s configuration file
    (``run_config_path``), and any output that is an input: a slide or one of ``inputs`` (the
    model's checkpoint). See NOTE [Outputs never replace inputs].
    """
    slide_paths = [Path(s) for s in slides]
    out_dir = Path(out_dir)
    plan: dict[Path, dict[str, Path]] = {}
    names: dict[str, Path] = {}
    for s in slide_paths:
        stem = slide_stem(s)
        key = stem.casefold()  # one file on case-insensitive file systems (macOS, Windows)
        if key in names:
            raise ConfigError(
                f"slides {names[key]} and {s} have the same output name {stem!r}: their outputs "
                f"({out_dir / stem}.*) would replace each other; give each folder of slides its own `out_dir`, "
                "or rename one of the slides"
            )
        names[key] = s
        plan[s] = output_paths(out_dir, stem)
    outputs = [p for paths in plan.values() for p in paths.values()]
    if command is not None:
        config = run_config_path(out_dir, command)
        for s, paths in plan.items():
            for p in paths.values():
                if same_file(p, config):
                    raise ConfigError(
                        f"the output {p} of slide {s} is the run's configuration file {config}: rename the slide, "
                        "or choose another `out_dir`"
                    )
        outputs.append(config)
    refuse_inputs(outputs, [*slide_paths, *inputs])
    return plan



def slide_stem(path: str | os.PathLike) -> str:
    """Output name stem of a slide: the file name without its suffix (a DICOM folder: its name)."""
    p = Path(path)
    if p.is_dir():
        return p.name
    name = p.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return p.stem


def expand_slide_paths(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Slides from paths, folders (their slide files; a folder of .dcm files is one slide) and globs.

    Folders and globs skip gigaseg's own outputs (``*.mask.tiff``, ``*.overlay.png``);
    a path given explicitly is always taken.

    Raises:
        InputError: an item that matches nothing.
    """
    out: list[Path] = []
    for item in items:
        s = str(item)
        if any(c in s for c in "*?[") and not Path(s).exists():
            matches = sorted(_glob.glob(s, recursive=True))
            if not matches:
                raise InputError(f"{s}: the pattern matches no file; check the path")
            out.extend(Path(m) for m in matches if not _is_output(Path(m)))
            continue
        p = Path(s).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file())
            if any(f.suffix.lower() == ".dcm" for f in files):
                out.append(p)  # a DICOM WSI series
                continue
            slides = [f for f in files if f.suffix.lower() in SLIDE_SUFFIXES and not _is_output(f)]
            subdirs = sorted(d for d in p.iterdir() if d.is_dir() and any(x.suffix.lower() == ".dcm"
                                                                        for x in d.iterdir()))
            if not slides and not subdirs:
                raise InputError(f"{p}: folder holds no slide file ({', '.join(SLIDE_SUFFIXES)}); check the path")
            out.extend(slides)
            out.extend(subdirs)
            continue
        out.append(p)  # missing files are reported per slide
    seen, unique = set(), []
    for p in out:
        key = p.resolve() if p.exists() else p
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _is_output(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".mask.tiff") or name.endswith(".overlay.png")


def open_with_mpp(slide_path: Path, mpp: float | None, *, strict: bool = False):
    """Open a slide whose resolution is known (from the file or ``mpp``), else a SlideError.
    ``strict``: the slide raises at the first problem of its data (``open_slide``'s)."""
    from .slides import open_slide

    slide = open_slide(slide_path, mpp=mpp, strict=strict)
    if slide.mpp is None:
        slide.close()
        raise SlideError(
            f"{slide_path}: the file does not state its resolution (microns per pixel); give it as "
            f"`mpp`, e.g. 0.25 for a 40x scan, 0.5 for 20x, or the "
            f"thumbnail's own um/px (slide width in um / width in pixels)"
        )
    return slide


def check_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` if needed and check that it is writable (else an OutputError)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"output folder {out_dir} cannot be created ({exc.strerror or exc}); "
                          "choose another `out_dir`", cause=exc) from exc
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {out_dir} is not writable; fix its permissions or choose another `out_dir`")


def require_writers() -> None:
    """Import the optional packages the writers need, so that a missing one fails before the work
    (a MissingDependencyError with the pip command)."""
    for module, what in (("tifffile", "the mask TIFF"), ("contourpy", "the GeoJSON"), ("shapely", "the GeoJSON"),
                         ("PIL", "the overlay")):
        require(module, f"writing {what}")


# NOTE [Stale temporaries]
# A slide's outputs are made in hidden temporary folders inside the output folder (the raw
# prediction grid, then the four files before they are renamed into place). Ctrl-C and SIGTERM
# remove them on the way out; SIGKILL, a crash or a power cut cannot, and a gigapixel slide's grid
# is gigabytes. So each folder's name says who made it: ``.gigaseg-tmp-<pid>@<host>.<stem>.<random><suffix>``,
# and every prediction or baseline run first removes the folders of that form in its output folder
# whose process is gone: made on this host (the name says so), by a process id that no longer
# runs, owned by this user, a real folder (not a link). Folders of processes that still run, or
# of other hosts (a shared file system), are left alone.
#: The start of the name of every temporary folder in an output folder (NOTE [Stale temporaries]).
TEMP_PREFIX = ".gigaseg-tmp-"
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)@([A-Za-z0-9-]*)\.")


def _host() -> str:
    """This host's name as it appears in a temporary folder's name (no dots: the stem follows one)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]


def temp_dir(out_dir: Path, stem: str, suffix: str) -> Path:
    """A new hidden temporary folder in ``out_dir`` for slide ``stem``, named for this process
    (NOTE [Stale temporaries]); ``tempfile.mkdtemp``: a random name, created exclusively, mode
    0700 (NOTE [Temporary files] in gigaseg._atomic). Else an OutputError."""
    from ._atomic import temp_dir as make

    prefix = f"{TEMP_PREFIX}{os.getpid()}@{_host()}.{stem[:120]}."
    return make(out_dir, prefix, suffix, fix="choose another `out_dir`")


def _process_gone(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return pid <= 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, as another user
        return False
    return False


def sweep_temporaries(out_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders in ``out_dir`` left by gigaseg processes that are gone
    (NOTE [Stale temporaries]); returns what was removed. Nothing that cannot be removed stops
    the run."""
    out_dir = Path(out_dir)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(out_dir))
    except OSError:
        return removed
    host, uid = _host(), os.getuid() if hasattr(os, "getuid") else None
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if m is None or m.group(2) != host or not _process_gone(int(m.group(1))):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or (uid is not None and st.st_uid != uid):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.lexists(entry.path):
            removed.append(Path(entry.path))
    return removed


def thumbnail(slide, side: int = THUMB_SIDE) -> tuple[np.ndarray, tuple[float, float]]:
    """(thumbnail RGB, level-0 pixels per thumbnail pixel (x, y))."""
    l0_w, l0_h = slide.dimensions
    mx, my = slide.mpp
    t_mpp = max(l0_w * mx, l0_h * my) / side
    t_mpp = max(t_mpp, mx, my)  # never upsample the thumbnail
    tw, th = max(1, round(l0_w * mx / t_mpp)), max(1, round(l0_h * my / t_mpp))
    img = slide.read_region_at_mpp((0, 0), t_mpp, (tw, th))
    return img, (t_mpp / mx, t_mpp / my)


def write_outputs(slide, grid, out_dir: Path, stem: str, *, binary, tiff_transform, min_area: float,
                  simplify: float | None, summary: dict, overwrite: bool, tiff_done: Path | None = None,
                  classes: list[str] | None = None) -> dict:
    """Write the mask TIFF, GeoJSON, overlay and summary of ``grid`` atomically; returns the summary.

    ``tiff_done``: a mask TIFF already written (moved into place instead of writing one).
    ``classes``: ``grid`` holds the class indices of these classes (``binary`` is then unused):
    the GeoJSON and the overlay have each class k >= 1 (NOTE [Class outputs] in gigaseg.predict).
    """
    from ._atomic import write_json_atomic
    from ._writers import class_colors, contour_grid, mask_polygons, write_geojson, write_mask_tiff, write_overlay

    paths = output_paths(out_dir, stem)
    mx, my = slide.mpp
    tmp = temp_dir(out_dir, stem, ".tmp")
    try:
        t0 = time.perf_counter()
        if tiff_done is None:
            write_mask_tiff(tmp / paths["mask"].name, grid, mpp=(mx, my), transform=tiff_transform)
        else:
            os.replace(tiff_done, tmp / paths["mask"].name)
        t_tiff = time.perf_counter() - t0
        t0 = time.perf_counter()
        um_per_l0 = math.sqrt(mx * my)
        by_class: dict[str, list] = {}
        colors = dict(zip(classes, class_colors(len(classes)))) if classes is not None else None
        for k in ([1] if classes is None else range(1, len(classes))):
            cmask, f = contour_grid(grid, binary if classes is None else _class_mask(k))
            scale = (grid.step[0] * f, grid.step[1] * f)
            simplify_l0 = (0.5 * max(scale) if simplify is None else float(simplify) / um_per_l0)
            found = mask_polygons(cmask, scale=scale, simplify=simplify_l0, min_area=float(min_area) / (mx * my))
            by_class["Tissue" if classes is None else classes[k]] = found
            del cmask
        polys = [p for found in by_class.values() for p in found]
        write_geojson(tmp / paths["geojson"].name, polys if classes is None else by_class, colors)
        t_geo = time.perf_counter() - t0
        t0 = time.perf_counter()
        thumb, l0_per_thumb = thumbnail(slide)
        th, tw = thumb.shape[:2]
        gy = np.clip(np.floor((np.arange(th) + 0.5) * l0_per_thumb[1] / grid.step[1]).astype(np.int64), 0,
                     grid.shape[0] - 1)
        gx = np.clip(np.floor((np.arange(tw) + 0.5) * l0_per_thumb[0] / grid.step[0]).astype(np.int64), 0,
                     grid.shape[1] - 1)
        tmask = grid.take_rows(gy)[:, gx]
        if classes is None:
            tmask = binary(tmask)
        dropped = (summary.get("component_filter") or {}).get("dropped_pieces", [])  # NOTE [Component filter]
        write_overlay(tmp / paths["overlay"].name, thumb, polys if classes is None else by_class,
                      l0_per_thumb=l0_per_thumb, thumb_mask=tmask, colors=colors,
                      boxes=[p["box_level0"] for p in dropped])
        t_ov = time.perf_counter() - t0
        if classes is not None:
            summary["class_pieces"] = {name: len(found) for name, found in by_class.items()}
        summary.update({
            "pieces": len(polys),
            "polygon_area_mm2": round(sum(p.area for p in polys) * mx * my / 1e6, 6),
            "contour_subsample": f,
            "simplify_um": round(simplify_l0 * um_per_l0, 4),
            "min_area_um2": float(min_area),
        })
        if tiff_done is None:
            summary["timings"]["tiff_s"] = round(t_tiff, 3)
        summary["timings"].update({"geojson_s": round(t_geo, 3), "overlay_s": round(t_ov, 3)})
        summary["paths"] = {k: str(v) for k, v in paths.items()}
        # the sizes of the files the summary completes (NOTE [Complete outputs])
        summary["sizes"] = {k: (tmp / paths[k].name).stat().st_size for k in ("mask", "geojson", "overlay")}
        # what reading the slide met, the overlay's thumbnail included (NOTE [Slide problems])
        summary["warnings"] = list(dict.fromkeys([*getattr(slide, "problems", ()), *summary.get("warnings", [])]))
        write_json_atomic(tmp / paths["summary"].name, summary)
        order = ("mask", "geojson", "overlay", "summary")  # the summary last: it marks completion
        if not overwrite:
            appeared = [str(paths[k]) for k in order if paths[k].exists()]
            if appeared:
                raise InputError(f"{', '.join(appeared)} appeared while predicting; pass `overwrite=True` to replace")
        for key in order:
            os.replace(tmp / paths[key].name, paths[key])
    except OSError as exc:
        if isinstance(exc, GigasegError) and not isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write the outputs of {stem} in {out_dir} ({exc.strerror or exc}); "
                          "free disk space or choose another `out_dir`", cause=exc) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _class_mask(k: int):
    """The 0/1 mask of class ``k`` of a block of class indices."""
    def mask(block: np.ndarray) -> np.ndarray:
        return (block == k).astype(np.uint8)
    return mask


def existing_outputs(paths: dict[str, Path]) -> list[Path]:
    """The outputs in ``paths`` that exist already."""
    return [p for p in paths.values() if p.exists()]


# NOTE [Complete outputs]
# A slide's outputs are complete when its summary exists, is a gigaseg summary, and the mask
# TIFF, GeoJSON and overlay it names exist with the sizes it records (``sizes``; a summary of
# gigaseg 0.1, without them: the three files exist). Only then does a later run keep them
# ("kept"). Outputs without their summary, or with files of other sizes, are the leftovers of a
# run that was killed between two renames or of a file changed since: the slide is done again
# and its summary says why (``redone``). A file under the summary's name that is not a gigaseg
# summary is not replaced without `overwrite=True`.
def output_state(paths: dict[str, Path]) -> tuple[str, str]:
    """("none" | "complete" | "partial" | "foreign", why) for a slide's outputs (NOTE [Complete outputs])."""
    present = [k for k, p in paths.items() if os.path.lexists(p)]
    if not present:
        return "none", ""
    summary_path = paths["summary"]
    if "summary" not in present:
        return "partial", f"{', '.join(str(paths[k]) for k in present)} exist(s) without the summary {summary_path}"
    try:
        summary: Any = json.loads(summary_path.read_text())
    except (OSError, ValueError, RecursionError):
        summary = None
    if not isinstance(summary, dict) or summary.get("command") not in ("predict", "baseline"):
        return "foreign", f"{summary_path} is not a gigaseg summary"
    sizes = summary.get("sizes")
    for key in ("mask", "geojson", "overlay"):
        path = paths[key]
        if not path.is_file():
            return "partial", f"{path} is missing (its summary {summary_path} names it)"
        if isinstance(sizes, dict) and sizes.get(key) != path.stat().st_size:
            return "partial", (f"{path} has {path.stat().st_size} bytes, but its summary {summary_path} says "
                               f"{sizes.get(key)}")
    return "complete", ""
