"""Errors: library messages name parameters and the command shows its flags; OutputError for
outputs that cannot be written (nothing half-written is left); optional packages fail with the
pip command; every imported package is declared in pyproject.toml."""

from __future__ import annotations

import ast
import errno
import importlib.metadata
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import gigaseg
from gigaseg import (
    CheckpointError,
    ConfigError,
    GigasegError,
    InputError,
    MissingDependencyError,
    OutputError,
    PlanError,
    StoreError,
    UNet,
    preset,
)
from gigaseg.cli import command_parser, main, show_flags
from gigaseg.store import RegionStore

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "gigaseg"


def _err(capsys) -> str:
    return capsys.readouterr().err


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# --- library messages name parameters, the command its flags -------------------------------------


def test_library_messages_name_no_flags():
    """No string in the library (outside the CLI and the benchmarks) tells a Python caller about a
    ``--flag``, except docstrings and comments (command examples), the train loop's notices and pip's
    own flags."""
    allowed = {("training.py", "gigaseg train --resume"), ("training.py", "no --val-data"),
               ("training.py", "give --memory-budget"),  # the tiling advice, which names both forms
               ("checkpoint.py", "pip install --force-reinstall")}
    bad = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts[0] in ("cli", "bench"):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                for m in re.finditer(r"(?<![\w-])--(?:[a-z][a-z-]*|$)", node.value):  # f"--{name}" too
                    if not any(rel.name == f and s in node.value for f, s in allowed):
                        bad.append(f"{rel}:{node.lineno}: {m.group(0)} in {node.value[:60]!r}")
    assert not bad, "\n".join(bad)


def test_a_store_path_is_out_on_the_command_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError) as info:
        RegionStore.create(blocker)
    assert "choose another `path`" in str(info.value) and "--" not in str(info.value)
    assert main(["prepare", "--synthetic", "1", "--size", "8x8", "--out", str(blocker), "--no-progress"]) == 2
    err = _err(capsys)
    assert "exists and is not a directory; choose another --out" in err and "`" not in err


def test_an_output_folder_is_out_on_the_command_line(tmp_path, capsys):
    from gigaseg.outputs import check_out_dir

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot be created .*; choose another `out_dir`"):
        check_out_dir(blocker / "out")
    np.save(tmp_path / "a.npy", np.ones((8, 8), np.uint8))
    rc = main(["evaluate", str(tmp_path / "a.npy"), "--reference", str(tmp_path / "a.npy"),
               "--out", str(blocker / "out")])
    assert rc == 2
    err = _err(capsys)
    assert "cannot be created" in err and "choose another --out" in err and "out_dir" not in err


def test_the_memory_budget_with_its_value(capsys):
    from gigaseg.engine import plan

    with pytest.raises(PlanError) as info:
        plan(preset("tiny"), 64, 64, memory_budget="1MB")
    assert re.search(r"give `memory_budget='\d+MiB'` or more", str(info.value))
    assert main(["bench", "step", "--height", "64", "--width", "64", "--memory-budget", "1MB", "--json"]) == 2
    assert re.search(r"give --memory-budget \d+MiB or more", _err(capsys))


def test_training_options_by_name_and_by_flag(tmp_path, capsys):
    from gigaseg.options import TrainConfig

    with pytest.raises(ConfigError, match=r"`lr=-1\.0` must be a positive number"):
        TrainConfig(data="d", out="o", lr=-1.0).check()
    with pytest.raises(ConfigError, match=r"`val_every=-2` must be an integer >= 0"):
        TrainConfig(data="d", out="o", val_every=-2).check()
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--lr", "-1"]) == 2
    err = _err(capsys)
    assert "--lr -1.0 must be a positive number" in err and "`" not in err


def test_show_flags_spells_each_kind_of_option():
    predict = command_parser("predict")
    assert show_flags("pass `overwrite=True` to replace", predict) == "pass --overwrite to replace"
    assert show_flags("give `memory_budget='2 GB'`", predict) == "give --memory-budget '2 GB'"
    assert show_flags("give it as `mpp`", predict) == "give it as --mpp"
    assert show_flags("one of the `slides`", predict) == "one of the SLIDE"
    assert show_flags("choose another `out_dir`", predict) == "choose another --out"  # declared with feeds
    assert show_flags("`overwrite=False`", predict) == "`overwrite=False`"  # no option sets it to False
    assert show_flags("`no_such_parameter` and `x=1` stay", predict) == "`no_such_parameter` and `x=1` stay"
    train = command_parser("train")
    assert show_flags("`progress=False`, `augment=False`", train) == "--no-progress, --no-augment"
    assert show_flags("`steps=6`", command_parser("bench", "step")) == "--steps 6"


# --- OutputError ---------------------------------------------------------------------------------


def test_output_error_is_an_input_error_and_an_os_error():
    assert gigaseg.OutputError is OutputError and "OutputError" in gigaseg.__all__
    assert issubclass(OutputError, GigasegError) and issubclass(OutputError, InputError)
    assert issubclass(OutputError, OSError)
    cause = OSError(errno.EDQUOT, "Disk quota exceeded", "x.tiff")
    err = OutputError("cannot write x.tiff (Disk quota exceeded); free disk space", cause=cause)
    assert (err.errno, err.strerror, err.filename) == (errno.EDQUOT, "Disk quota exceeded", "x.tiff")
    assert str(err) == "cannot write x.tiff (Disk quota exceeded); free disk space"


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory):
    import tifffile

    path = tmp_path_factory.mktemp("slide") / "s.tif"
    rgb = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    tifffile.imwrite(path, rgb, photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    return path


class _FillsUp:
    """A file whose disk fills after ``room`` bytes: a short write, then ENOSPC."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        if len(data) > self._room:
            self._f.write(data[: self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _opens_a_full_disk(monkeypatch, module, room: int) -> None:
    """``open`` in ``module`` gives files for writing that fill the disk after ``room`` bytes."""
    import builtins

    def fake_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return _FillsUp(f, room) if any(c in mode for c in "wa") else f

    monkeypatch.setattr(module, "open", fake_open, raising=False)


def test_predict_on_a_full_disk_leaves_nothing(tmp_path, small_slide, monkeypatch):
    from gigaseg import predict

    out = tmp_path / "out"
    net = UNet(preset("tiny")).eval()
    _opens_a_full_disk(monkeypatch, predict, room=1000)  # the prediction's rows
    with pytest.raises(OutputError, match="No space left on device.*choose another `out_dir`") as info:
        predict.predict_slide(net, small_slide, out, progress=False)
    assert info.value.errno == errno.ENOSPC
    assert list(out.iterdir()) == []  # no output, no temporary folder
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", _full_disk)  # the outputs moved into place
    with pytest.raises(OutputError, match="cannot write the outputs of s .*No space left on device"):
        predict.predict_slide(net, small_slide, out, progress=False)
    assert list(out.iterdir()) == []


def test_predict_on_a_full_disk_through_the_command(tmp_path, small_slide, monkeypatch, capsys):
    from gigaseg import predict

    ck = tmp_path / "m.pt"
    gigaseg.save_checkpoint(ck, UNet(preset("tiny")), mpp=0.5)
    out = tmp_path / "out"
    _opens_a_full_disk(monkeypatch, predict, room=1000)
    assert main(["predict", str(small_slide), "--model", str(ck), "--out", str(out), "--no-progress"]) == 1
    err = _err(capsys)
    assert "No space left on device" in err and "choose another --out" in err and "out_dir" not in err
    assert sorted(p.name for p in out.iterdir()) == ["predict-config.json"]


def test_prepare_on_a_full_disk_leaves_no_region(tmp_path, monkeypatch, capsys):
    from gigaseg.prepare import prepare_synthetic

    store = RegionStore.create(tmp_path / "store")
    monkeypatch.setattr(os, "pwrite", _full_disk)
    with pytest.raises(OutputError, match="cannot write region 'synth-s0' .*No space left on device") as info:
        prepare_synthetic(store, 1, (64, 48), progress=False)
    assert info.value.errno == errno.ENOSPC and "choose another `store`" in str(info.value)
    assert len(RegionStore(store.path)) == 0
    assert not [p.name for p in store.path.iterdir() if p.name.startswith(".tmp")]
    assert main(["prepare", "--synthetic", "1", "--size", "48x64", "--out", str(store.path), "--no-progress"]) == 2
    err = _err(capsys)
    assert "No space left on device" in err and "choose another --out" in err
    assert len(RegionStore(store.path)) == 0


def test_a_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    from gigaseg import _atomic
    from gigaseg.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "last.pt", UNet(preset("tiny")), mpp=0.5, step=1)
    before = path.read_bytes()
    _opens_a_full_disk(monkeypatch, _atomic, room=4096)  # torch's writer fails mid-file
    with pytest.raises(OutputError, match="cannot write checkpoint .*No space left on device") as info:
        save_checkpoint(path, UNet(preset("tiny")), mpp=0.5, step=2)
    assert isinstance(info.value, CheckpointError)  # as gigaseg 0.1 raised
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file
    monkeypatch.setattr(os, "replace", _full_disk)
    with pytest.raises(OutputError, match="previous checkpoint is intact"):
        save_checkpoint(path, UNet(preset("tiny")), mpp=0.5, step=3)
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_an_unwritable_output_folder(tmp_path, monkeypatch):
    from pathlib import Path as _Path

    from gigaseg.outputs import check_out_dir

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(_Path, "mkdir", denied)
    with pytest.raises(OutputError, match="Permission denied") as info:
        check_out_dir(tmp_path / "new")
    assert info.value.errno == errno.EACCES
    with pytest.raises(OutputError, match="region store .* cannot be created .*Permission denied"):
        RegionStore.create(tmp_path / "store")


# --- optional dependencies -----------------------------------------------------------------------


def _missing(monkeypatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_package_and_the_pip_command(monkeypatch):
    from gigaseg._deps import require

    _missing(monkeypatch, "PIL")
    with pytest.raises(MissingDependencyError) as info:
        require("PIL.Image", "reading PNG masks")  # a cached submodule does not hide the missing package
    msg = str(info.value)
    assert msg.startswith("reading PNG masks needs the optional package pillow (import PIL)")
    assert "pip install 'gigaseg[slides]'" in msg
    assert isinstance(info.value, ImportError) and info.value.name == "PIL"


def test_a_zarr_region_without_zarr_says_so(tmp_path, monkeypatch):
    pytest.importorskip("zarr")
    store = RegionStore.create(tmp_path / "store")
    store.add_region("z", np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8), format="zarr")
    _missing(monkeypatch, "zarr")
    region = RegionStore(store.path)["z"]
    with pytest.raises(MissingDependencyError, match=r"region 'z' \(zarr format\) needs the optional package") as info:
        _ = region.image
    assert "pip install 'gigaseg[store]'" in str(info.value) and "rebuild" not in str(info.value)
    with pytest.raises(MissingDependencyError, match=re.escape("pip install 'gigaseg[store]'")):
        store.add_region("z2", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), format="zarr")


@pytest.mark.parametrize("module, extra, call", [
    ("shapely", "geo", lambda tmp: gigaseg.rasterize_geojson({"type": "FeatureCollection", "features": []},
                                                             (8, 8))),
    ("contourpy", "geo", lambda tmp: __import__("gigaseg._writers", fromlist=["x"]).mask_polygons(
        np.ones((4, 4), np.uint8), scale=(1.0, 1.0), simplify=0.0, min_area=0.0)),
    ("tifffile", "slides", lambda tmp: gigaseg.evaluate_pair(tmp / "a.tif", tmp / "a.tif")),
    ("PIL", "slides", lambda tmp: gigaseg.evaluate_pair(tmp / "a.png", tmp / "a.png")),
])
def test_missing_optional_packages(tmp_path, monkeypatch, module, extra, call):
    (tmp_path / "a.tif").write_bytes(b"II*\x00")  # never read: the package is missing first
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    _missing(monkeypatch, module)
    with pytest.raises(MissingDependencyError, match=re.escape(f"pip install 'gigaseg[{extra}]'")):
        call(tmp_path)


def test_predict_without_a_writer_package_fails_before_the_work(tmp_path, small_slide, monkeypatch, capsys):
    ck = tmp_path / "m.pt"
    gigaseg.save_checkpoint(ck, UNet(preset("tiny")), mpp=0.5)
    _missing(monkeypatch, "contourpy")
    assert main(["predict", str(small_slide), "--model", str(ck), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 2
    err = _err(capsys)
    assert "contourpy" in err and "pip install 'gigaseg[geo]'" in err
    assert not (tmp_path / "out" / "s.mask.tiff").exists()


# --- every imported package is declared ----------------------------------------------------------

# import name -> distribution, for packages whose names differ and that may not be installed here
_DISTRIBUTIONS = {"PIL": "pillow", "openslide": "openslide-python", "skimage": "scikit-image",
                  "sklearn": "scikit-learn", "cv2": "opencv-python", "yaml": "pyyaml"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {_normal(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in reqs}

    extras = {k: names(v) for k, v in project.get("optional-dependencies", {}).items()}
    return names(project["dependencies"]), extras


def _third_party_imports() -> dict[str, str]:
    """Top-level import name -> a file that imports it, for every non-stdlib import in the package."""
    found: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = [a.name.partition(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                tops = [node.module.partition(".")[0]]
            else:
                continue
            for top in tops:
                if top not in sys.stdlib_module_names and top not in ("gigaseg", "__future__"):
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    core, extras = _declared()
    declared = core.union(*extras.values())
    installed = importlib.metadata.packages_distributions()
    from gigaseg._deps import OPTIONAL

    undeclared = []
    for top, where in _third_party_imports().items():
        dists = {_normal(d) for d in installed.get(top, [])}
        dists |= {_normal(_DISTRIBUTIONS.get(top, top))}
        if top in OPTIONAL:
            dists.add(_normal(OPTIONAL[top][0]))
        if not dists & declared:
            undeclared.append(f"{top} (imported in {where}) is in no dependency list of pyproject.toml")
    assert not undeclared, "\n".join(undeclared)


def test_optional_packages_are_the_extras_and_fail_with_their_extra():
    core, extras = _declared()
    from gigaseg._deps import OPTIONAL

    for dist, extra in OPTIONAL.values():
        assert _normal(dist) in extras.get(extra, set()), f"{dist} is not in the {extra!r} extra"
        assert _normal(dist) not in core, f"{dist} is a core dependency: it needs no require()"
    for top in _third_party_imports():
        dist = _normal(_DISTRIBUTIONS.get(top, top))
        if dist not in core and top not in OPTIONAL:
            pytest.fail(f"{top} is optional (not a core dependency) but has no entry in gigaseg._deps.OPTIONAL")


def test_contourpy_is_declared_where_the_writers_need_it():
    _, extras = _declared()
    assert "contourpy" in extras["geo"] and "shapely" in extras["geo"]

