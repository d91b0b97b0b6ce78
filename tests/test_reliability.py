"""Trust nothing that comes in: corruption is visible, work is bounded, nothing half-done is left
or trusted (docs/reliability.md lists each promise and the test here that checks it)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from conftest import repeated_tile_tiff
from PIL import Image

from gigaseg import CheckpointError, ConfigError, InputError, OutputError, SlideError, UNet, preset, save_checkpoint
from gigaseg.cli import main
from gigaseg.slides import open_slide

MPP = 0.5


# --- fixtures ------------------------------------------------------------------------------------


def _write_tiff(path, rgb, mpp=MPP, **kw):
    import tifffile

    kw.setdefault("tile", (128, 128))
    kw.setdefault("compression", "zlib")
    tifffile.imwrite(path, rgb, photometric="rgb" if rgb.ndim == 3 else "minisblack",
                     resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER", metadata=None, **kw)
    return path


def lying_tiff(width: int, height: int, *, tile: int = 4096, mpp: float = MPP) -> bytes:
    """A small tiled TIFF whose header says ``width`` x ``height``: every tile is the same
    deflate-compressed white tile (10**6 x 10**6 pixels in about 0.5 MB)."""
    tile_data = zlib.compress(b"\xff" * (tile * tile * 3), 9)
    n = -(-width // tile) * -(-height // tile)
    return repeated_tile_tiff(width, height, tile, tile_data, n, mpp)


def lying_png(width: int, height: int) -> bytes:
    """A 1 x 1 greyscale PNG whose header says ``width`` x ``height`` (CRCs right)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR's width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def scramble(data: bytes, start: int, n: int, seed: int) -> bytes:
    """``data`` with ``n`` bytes from ``start`` replaced by random ones (never 0xFF: no marker)."""
    rnd = random.Random(seed)
    out = bytearray(data)
    for i in range(start, min(start + n, len(out) - 2)):
        out[i] = rnd.randrange(255)
    return bytes(out)


@pytest.fixture(scope="module")
def rgb():
    from gigaseg.synth import render_region

    image, _ = render_region(3, 0, 0, 320, 256, width=320, height=256, mpp=MPP)
    return image


@pytest.fixture(scope="module")
def files(tmp_path_factory, rgb):
    """A clean TIFF, a clean and a corrupt JPEG, a checkpoint of a tiny untrained model."""
    d = tmp_path_factory.mktemp("in")
    _write_tiff(d / "good.tif", rgb)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    (d / "good.jpg").write_bytes(buf.getvalue())
    (d / "bad.jpg").write_bytes(scramble(buf.getvalue(), len(buf.getvalue()) // 3, 200, seed=3))
    torch.manual_seed(0)
    save_checkpoint(d / "ck.pt", UNet(preset("tiny")), mpp=MPP)
    return d


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block takes longer than ``seconds``."""
    def boom(*_):
        raise TimeoutError(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _predict(model: str, *args: str) -> int:
    """``gigaseg predict ARGS... --model MODEL --no-progress``."""
    return main(["predict", *args, "--model", model, "--no-progress"])


# --- 4. corruption is visible ----------------------------------------------------------------------


def test_corrupt_jpeg_is_a_warning_in_the_summary_and_on_stderr_or_an_error_with_strict(files, tmp_path, capsys):
    assert _predict(str(files / "ck.pt"), str(files / "bad.jpg"), "--mpp", "0.5", "--out", str(tmp_path / "a")) == 0
    err = capsys.readouterr().err
    assert "gigaseg predict: warning: " in err and "bad.jpg" in err and "corrupt JPEG data" in err
    summary = json.loads((tmp_path / "a" / "bad.json").read_text())
    assert any("corrupt JPEG data" in w for w in summary["warnings"]) and summary["strict"] is False
    # --strict: that slide fails, naming the problem and the option
    assert _predict(str(files / "ck.pt"), str(files / "bad.jpg"), "--mpp", "0.5", "--out", str(tmp_path / "b"),
                    "--strict") == 1
    err = capsys.readouterr().err
    assert "corrupt JPEG data" in err and "--strict" in err
    assert not (tmp_path / "b" / "bad.json").exists()
    # a clean slide has no warnings
    assert _predict(str(files / "ck.pt"), str(files / "good.jpg"), "--mpp", "0.5", "--out", str(tmp_path / "c"),
                    "--strict") == 0
    assert json.loads((tmp_path / "c" / "good.json").read_text())["warnings"] == []


def test_baseline_and_prepare_report_corruption_too(files, tmp_path, capsys):
    assert main(["baseline", str(files / "bad.jpg"), "--mpp", "0.5", "--out", str(tmp_path / "b"),
                 "--no-progress"]) == 0
    assert "warning: " in capsys.readouterr().err
    assert json.loads((tmp_path / "b" / "bad.json").read_text())["warnings"]
    np.save(tmp_path / "m.npy", np.ones((256, 320), np.uint8))
    store = tmp_path / "store"
    args = ["prepare", str(files / "bad.jpg"), "--masks", str(tmp_path / "m.npy"), "--size", "64x64",
            "--slide-mpp", "0.5", "--out", str(store), "--no-progress"]
    assert main(args) == 0
    assert "gigaseg prepare: warning: region bad" in capsys.readouterr().err
    from gigaseg.store import RegionStore

    assert any("corrupt JPEG data" in w for w in RegionStore(store)["bad"].meta["warnings"])
    assert main([*args, "--name", "strict", "--strict"]) == 2
    assert "corrupt JPEG data" in capsys.readouterr().err and "strict" not in RegionStore(store)


def test_a_damaged_jpeg_tile_is_found_when_read(tmp_path, rgb):
    import tifffile

    path = _write_tiff(tmp_path / "t.tif", rgb, compression="jpeg")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[1], page.databytecounts[1]
    data = path.read_bytes()
    path.write_bytes(data[:offset] + scramble(data[offset:offset + count], count // 3, 40, seed=1)
                     + data[offset + count:])
    with open_slide(path) as s:
        assert s.problems == ()  # the probe at open decodes the last tile only
        s.read_region((0, 0), 0, s.dimensions)
        assert len(s.problems) == 1 and s.problems[0].startswith("level 0 tile 1 at (x, y) = (128, 0): corrupt JPEG")
    with open_slide(path, strict=True) as s, pytest.raises(SlideError, match="tile 1 .*corrupt JPEG data.*strict"):
        s.read_region((0, 0), 0, s.dimensions)


def test_the_jpeg_check_finds_scrambled_data_and_passes_clean_files(rgb):
    """Scrambled bytes in the entropy-coded data that visibly damage the image are found (nearly
    all: a Huffman decoder that regains step by chance, with a small DC shift, can pass); clean
    files from Pillow and libjpeg-turbo, of any size and subsampling, never are."""
    import imagecodecs

    from gigaseg.slides._jpegcheck import jpeg_problem

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    good = buf.getvalue()
    ref = np.asarray(Image.open(io.BytesIO(good)).convert("RGB")).astype(int)
    rnd = random.Random(7)
    damaged = found = 0
    for trial in range(150):
        bad = scramble(good, rnd.randrange(700, len(good) - 300), rnd.choice([1, 5, 200]), seed=trial)
        try:
            got = np.asarray(Image.open(io.BytesIO(bad)).convert("RGB")).astype(int)
        except OSError:
            continue  # the decoder itself fails: an error already
        if (np.abs(got - ref).max(-1) > 40).mean() > 0.01:
            damaged += 1
            found += jpeg_problem(bad) is not None
    assert damaged > 50 and found >= 0.95 * damaged, (found, damaged)
    rng = np.random.default_rng(0)
    for w, h in ((1, 1), (7, 9), (17, 33), (333, 101)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image[::2, ::2] = 0
        for kw in ({"quality": 100, "subsampling": 0}, {"quality": 75}, {"quality": 50, "subsampling": 2},
                   {"optimize": True}):
            out = io.BytesIO()
            Image.fromarray(image).save(out, "JPEG", **kw)
            assert jpeg_problem(out.getvalue()) is None, (w, h, kw)
        assert jpeg_problem(imagecodecs.jpeg8_encode(image, level=95)) is None
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", progressive=True)
    assert jpeg_problem(scramble(out.getvalue(), 2000, 100, 1)) is None  # progressive: not checked


def test_grey_and_16_bit_images_are_converted_by_the_documented_rule_and_said(tmp_path, rgb):
    grey = rgb.mean(-1).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    _write_tiff(tmp_path / "g.tif", grey)
    deep = (grey.astype(np.uint16) * 16)  # 12-bit data in 16 bits
    Image.fromarray(deep).save(tmp_path / "d.png")
    for name in ("g.png", "g.tif"):
        with open_slide(tmp_path / name) as s:
            got = s.read_region((0, 0), 0, s.dimensions)
            assert np.array_equal(got, np.repeat(grey[..., None], 3, -1))
            assert any("greyscale" in p and "R = G = B" in p for p in s.problems)
        with pytest.raises(SlideError, match="greyscale.*strict"):
            open_slide(tmp_path / name, strict=True)
    with open_slide(tmp_path / "d.png") as s:
        got = s.read_region((0, 0), 0, s.dimensions)[..., 0]
        assert np.array_equal(got, ((deep.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8))
        assert "round(v * 255 / 65535)" in s.problems[0] and f"largest value is {deep.max()}" in s.problems[0]
    Image.fromarray(grey.astype(np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(SlideError, match="no fixed range"):
        open_slide(tmp_path / "f.tiff", backend="pillow")


def test_truncated_images_stay_errors_whatever_pillow_is_told(tmp_path, rgb, monkeypatch):
    from PIL import ImageFile

    Image.fromarray(rgb).save(tmp_path / "p.png")
    data = (tmp_path / "p.png").read_bytes()
    (tmp_path / "p.png").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # set by some other library
    with pytest.raises(SlideError, match="truncated or corrupt"):
        open_slide(tmp_path / "p.png")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_a_model_with_nan_weights_or_an_absurd_mpp_is_refused(tmp_path, files, rgb):
    from gigaseg import load_model
    from gigaseg.predict import predict_slide

    net = UNet(preset("tiny"))
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", net, mpp=MPP)
    with pytest.raises(CheckpointError, match=r"1 NaN or infinite value\(s\) in 'encoder.0.conv.weight'"):
        load_model(tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        predict_slide(net, files / "good.tif", tmp_path / "o", model_mpp=MPP, progress=False)
    save_checkpoint(tmp_path / "far.pt", UNet(preset("tiny")), mpp=1e9)
    with pytest.raises(CheckpointError, match="trained at 1000000000.0 microns per pixel"):
        load_model(tmp_path / "far.pt")


def test_mask_images_with_other_values_or_sizes_are_refused(tmp_path, files):
    from gigaseg.prepare import prepare_region
    from gigaseg.store import RegionStore

    store = RegionStore.create(tmp_path / "s")
    slide = files / "good.tif"  # 320 x 256

    def prep(mask, **kw):
        return prepare_region(store, slide, mask, (32, 32), progress=False, **kw)

    cases = {
        "float.npy": (np.where(np.eye(64, 80) > 0, 0.7, 0.0).astype(np.float32), r"not whole numbers \(0.7; float32\)"),
        "nan.npy": (np.full((64, 80), np.nan), r"not whole numbers \(nan"),
        "empty.npy": (np.ones((0, 0), np.uint8), "is 0 x 0 .*too small"),
        "one.npy": (np.ones((1, 1), np.uint8), "is 1 x 1 .*too small"),
        "aspect.npy": (np.ones((64, 90), np.uint8), "aspect ratios differ"),
        "huge.npy": (np.ones((1100, 1300), np.uint8), "more than 4 times"),
    }
    for name, (arr, match) in cases.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(InputError, match=match):
            prep(tmp_path / name)
    np.save(tmp_path / "ok.npy", np.where(np.eye(26, 32) > 0, 1.0, 0.0))  # 1/10 scale, rounded; whole floats
    assert prep(tmp_path / "ok.npy", name="ok").name == "ok"
    (tmp_path / "big.png").write_bytes(lying_png(10**5, 80_000))  # refused from its header, not decoded
    with pytest.raises(InputError, match="more than 4 times"):
        prep(tmp_path / "big.png")


def test_geojson_that_lies_is_refused_and_outside_polygons_warn(tmp_path, files):
    from gigaseg.prepare import prepare_region
    from gigaseg.store import RegionStore

    store = RegionStore.create(tmp_path / "s")

    def poly(coords):
        return {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [coords]}}

    def prep(obj, name, **kw):
        path = tmp_path / f"{name}.geojson"
        path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return prepare_region(store, files / "good.tif", path, (32, 32), name=name, progress=False, **kw)

    with pytest.raises(InputError, match="more than 1e.07 pixels outside the slide"):
        prep(poly([[0, 0], [1e300, 0], [1e300, 1e300], [0, 0]]), "huge")
    with pytest.raises(InputError, match="not finite"):
        prep('{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": '
             '[[[0, 0], [NaN, 0], [5, 5], [0, 0]]]}}', "nan")
    with pytest.raises(InputError, match="nested too deeply"):
        prep("[" * 100_000 + "]" * 100_000, "deep")
    outside = poly([[1e5, 1e5], [2e5, 1e5], [2e5, 2e5], [1e5, 1e5]])
    region = prep(outside, "outside")
    assert "wholly outside the slide (320 x 256 pixels), all of them" in region.meta["warnings"][0]
    with pytest.raises(InputError, match="wholly outside the slide.*strict"):
        prep(outside, "outside2", strict=True)
    assert "outside2" not in store


# --- 5. bounded work ---------------------------------------------------------------------------------


def test_a_lying_header_is_refused_with_the_numbers_and_the_batch_goes_on(tmp_path, files, capsys):
    (tmp_path / "lie.tif").write_bytes(lying_tiff(10**6, 10**6))
    assert (tmp_path / "lie.tif").stat().st_size < 600_000
    with deadline(120):
        code = _predict(str(files / "ck.pt"), str(tmp_path / "lie.tif"), str(files / "good.tif"), "--out",
                        str(tmp_path / "o"))
    err = capsys.readouterr().err
    assert code == 1 and "1 slide(s) failed" in err
    assert "1000000 x 1000000 = 1000.0 gigapixels" in err and "1.0 TB of temporary disk" in err
    assert "--model-mpp" in err
    assert (tmp_path / "o" / "good.json").exists()  # the other slide was predicted
    with deadline(60):
        assert main(["baseline", str(tmp_path / "lie.tif"), "--out", str(tmp_path / "b"), "--no-progress"]) == 1
    assert "1000.0 gigapixels" in capsys.readouterr().err


def test_absurd_mpp_ratios_are_refused_before_any_work(tmp_path, files, capsys):
    with deadline(60):
        assert _predict(str(files / "ck.pt"), str(files / "good.tif"), "--mpp", "1000", "--model-mpp", "0.01",
                        "--out", str(tmp_path / "a")) == 1
    assert "gigapixels at the model's 0.01 um/px" in capsys.readouterr().err
    with deadline(60):
        assert _predict(str(files / "ck.pt"), str(files / "good.tif"), "--mpp", "0.01", "--model-mpp", "1000",
                        "--out", str(tmp_path / "b")) == 1
    assert "less than one pixel" in capsys.readouterr().err
    # a read that would average more than a block per output pixel is refused, not allocated
    with open_slide(files / "good.tif", mpp=0.01) as s, pytest.raises(SlideError, match="no coarser pyramid level"):
        s.read_region_at_mpp((0, 0), 50.0, (1, 1))


def test_free_disk_and_memory_are_checked_before_the_work(tmp_path, files, monkeypatch):
    import shutil

    from gigaseg import _files
    from gigaseg.baseline import baseline_slide
    from gigaseg.predict import predict_slide
    from gigaseg.prepare import prepare_region
    from gigaseg.store import RegionStore

    model = (UNet(preset("tiny")), MPP)
    store = RegionStore.create(tmp_path / "s")
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(OutputError, match=r"needs 67.2 MB of disk in .*only 1.0 kB are free"):
        predict_slide(model, files / "good.tif", tmp_path / "o", progress=False)
    assert not list((tmp_path / "o").iterdir())
    np.save(tmp_path / "m.npy", np.ones((256, 320), np.uint8))
    with pytest.raises(OutputError, match=r"region 'r' \(64 x 64 pixels, npy\) needs 16.4 kB"):
        prepare_region(store, files / "good.tif", tmp_path / "m.npy", (64, 64), name="r", progress=False)
    monkeypatch.undo()
    monkeypatch.setattr(_files, "available_memory", lambda: 1000)
    with pytest.raises(InputError, match=r"about 983.0 kB, but 1.0 kB are available: give a coarser `working_mpp`"):
        baseline_slide(files / "good.tif", tmp_path / "b", working_mpp=MPP)
    with pytest.raises(InputError, match="one row of tiles .* of memory, but 1.0 kB are available"):
        predict_slide(model, files / "good.tif", tmp_path / "o", progress=False)


def test_running_out_of_memory_fails_one_slide_not_the_batch(tmp_path, files, monkeypatch):
    import gigaseg.slides.array as array
    from gigaseg.predict import predict_slides

    real = array.SlideArray.read

    def read(self, *a):
        if self.slide.path.name == "good.tif":
            raise MemoryError("Unable to allocate 3.6 TiB")
        return real(self, *a)

    monkeypatch.setattr(array.SlideArray, "read", read)
    summaries, failures = predict_slides((UNet(preset("tiny")), MPP), [files / "good.tif", files / "bad.jpg"],
                                         tmp_path, mpp=MPP, progress=False)
    assert [s["slide"] for s in summaries] == [str(files / "bad.jpg")]
    assert failures == [(str(files / "good.tif"), "out of memory (Unable to allocate 3.6 TiB); give a smaller "
                         "`memory_budget`, run the model at a coarser `model_mpp`, or free memory")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_special_files_are_refused_everywhere(tmp_path, files):
    """A FIFO would block the reader for ever, a device never end: each reader refuses them by name."""
    from gigaseg import load_model
    from gigaseg.geojson import load_geojson_polygons
    from gigaseg.prepare import prepare_region
    from gigaseg.store import RegionStore

    store = RegionStore.create(tmp_path / "s")
    for name in ("fifo.tif", "fifo.npy", "fifo.png", "fifo.geojson", "fifo.pt"):
        os.mkfifo(tmp_path / name)
    with deadline(30):
        with pytest.raises(SlideError, match="fifo.tif is a FIFO"):
            open_slide(tmp_path / "fifo.tif")
        for mask in ("fifo.npy", "fifo.png", "fifo.geojson"):
            with pytest.raises(InputError, match=f"{mask} is a FIFO"):
                prepare_region(store, files / "good.tif", tmp_path / mask, (32, 32), progress=False)
        with pytest.raises(InputError, match="is a FIFO"):
            load_geojson_polygons(tmp_path / "fifo.geojson")
        with pytest.raises(CheckpointError, match="fifo.pt is a FIFO"):
            load_model(tmp_path / "fifo.pt")
        if os.path.exists("/dev/zero"):
            with pytest.raises(SlideError, match="is a character device"):
                open_slide("/dev/zero")


# --- 6. nothing half-done is left or trusted ------------------------------------------------------------


def test_sigterm_during_predict_removes_its_temporary_folders(tmp_path, files):
    out = tmp_path / "out"
    code = (
        "import os, signal, sys, gigaseg.engine as e\n"
        "from gigaseg.cli import main\n"
        "real = e.iter_predict\n"
        "class Tiles:\n"
        "    def __init__(self, it): self.it = it; self.tile = it.tile; self.timings = it.timings; "
        "self.n_tiles = it.n_tiles\n"
        "    def __enter__(self): self.it.__enter__(); return self\n"
        "    def __exit__(self, *a): return self.it.__exit__(*a)\n"
        "    def __iter__(self):\n"
        "        for i, t in enumerate(self.it):\n"
        "            if i == 1: os.kill(os.getpid(), signal.SIGTERM)\n"
        "            yield t\n"
        "e.iter_predict = lambda *a, **k: Tiles(real(*a, **k))\n"
        f"sys.exit(main(['predict', {str(files / 'good.tif')!r}, '--model', {str(files / 'ck.pt')!r},"
        f" '--out', {str(out)!r}, '--memory-budget', '270MB', '--no-progress']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert "interrupted" in proc.stderr
    assert [p.name for p in out.iterdir()] == []  # no temporary folder, no output


def test_stale_temporary_folders_of_dead_processes_are_swept(tmp_path, files, capsys):
    from gigaseg.outputs import TEMP_PREFIX, _host

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "out"
        stale = out / f"{TEMP_PREFIX}{dead.pid}@{_host()}.good.abc123.grid"
        live = out / f"{TEMP_PREFIX}{alive.pid}@{_host()}.good.def456.grid"
        other_host = out / f"{TEMP_PREFIX}{dead.pid}@elsewhere.good.ghi789.tmp"
        for d in (stale, live, other_host):
            d.mkdir(parents=True)
            (d / "probabilities.u8").write_bytes(b"\0" * 1000)
        assert _predict(str(files / "ck.pt"), str(files / "good.tif"), "--out", str(out)) == 0
        assert not stale.exists() and live.exists() and other_host.exists()
        assert f"removed {stale}: the temporary folder of an earlier run that was killed" in capsys.readouterr().err
    finally:
        alive.kill()
        alive.wait()


def test_outputs_are_kept_only_when_the_summary_completes_them(tmp_path, files, capsys):
    from gigaseg.predict import predict_slide

    model = (UNet(preset("tiny")), MPP)
    out = tmp_path / "out"
    first = predict_slide(model, files / "good.tif", out, progress=False)
    assert set(first["sizes"]) == {"mask", "geojson", "overlay"}
    assert predict_slide(model, files / "good.tif", out, progress=False).get("skipped")
    # a run killed between two renames: the mask without its summary is done again, not kept
    (out / "good.json").unlink()
    again = predict_slide(model, files / "good.tif", out, progress=False)
    assert not again.get("skipped") and "without the summary" in again["redone"]
    # a file changed since: its size no longer matches the summary's
    with open(out / "good.geojson", "a") as f:
        f.write(" ")
    again = predict_slide(model, files / "good.tif", out, progress=False)
    assert "good.geojson has" in again["redone"] and predict_slide(model, files / "good.tif", out,
                                                                   progress=False).get("skipped")
    # a file under the summary's name that is not a gigaseg summary is not replaced without overwrite
    (out / "good.json").write_text('{"scanner": "notes"}')
    with pytest.raises(InputError, match="good.json is not a gigaseg summary.*`overwrite=True`"):
        predict_slide(model, files / "good.tif", out, progress=False)
    assert not predict_slide(model, files / "good.tif", out, progress=False, overwrite=True).get("skipped")


def test_a_run_that_died_before_its_first_checkpoint_starts_again(tmp_path, capsys, monkeypatch):
    import gigaseg.engine
    from gigaseg.prepare import prepare_synthetic
    from gigaseg.store import RegionStore
    from gigaseg.training import TrainConfig, resume_config, train

    s = RegionStore.create(tmp_path / "store")
    prepare_synthetic(s, 2, (64, 64), seed=3, progress=False)
    run = tmp_path / "run"
    config = TrainConfig(data=str(s.path), out=str(run), preset="tiny", steps=3, ckpt_every=100, progress=False,
                         device="cpu", val_every=0)
    real = gigaseg.engine.tiled_backward
    calls = []

    def dies(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the machine went away")  # as a kill would, before any checkpoint
        return real(*a, **k)

    monkeypatch.setattr(gigaseg.engine, "tiled_backward", dies)
    with pytest.raises(RuntimeError, match="went away"):
        train(config)
    monkeypatch.undo()
    assert (run / "config.json").exists() and (run / "log.csv").exists() and not (run / "checkpoint.pt").exists()
    with pytest.raises(CheckpointError, match="start it again with `out="):
        resume_config(run)
    capsys.readouterr()
    result = train(config)  # the same `out`: started again from step 0
    assert "stopped before its first checkpoint (no checkpoint.pt): starting it again from step 0" in \
        capsys.readouterr().err
    assert result["step"] == 3 and (run / "checkpoint.pt").exists()
    with open(run / "log.csv") as f:
        assert [int(line.split(",")[0]) for line in f.readlines()[1:]] == [1, 2, 3]
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(config)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"mine": 1}')
    with pytest.raises(ConfigError, match="not the configuration of a gigaseg training run"):
        train(TrainConfig(**{**config.to_dict(), "out": str(tmp_path / "other")}))


def test_evaluate_refuses_an_empty_or_special_reference(tmp_path, capsys):
    np.save(tmp_path / "pred.npy", np.ones((8, 8), np.uint8))
    np.save(tmp_path / "empty.npy", np.ones((0, 0), np.uint8))
    os.mkfifo(tmp_path / "fifo.npy")
    with deadline(30):
        assert main(["evaluate", str(tmp_path / "pred.npy"), "--reference", str(tmp_path / "empty.npy")]) == 2
        assert "empty.npy is empty (0 x 0 pixels)" in capsys.readouterr().err
        assert main(["evaluate", str(tmp_path / "pred.npy"), "--reference", str(tmp_path / "fifo.npy")]) == 2
        assert "fifo.npy is a FIFO" in capsys.readouterr().err
