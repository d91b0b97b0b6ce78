"""Fuzzing the readers: damaged and lying files end in a GigasegError or a documented warning.

Every reader of gigaseg (``open_slide`` with a read, mask images, GeoJSON, checkpoints, region
stores) is given small valid files with random truncations, bit flips and overwritten bytes
(hypothesis, a fixed number of examples, derandomized so a run is repeatable), and files whose
headers lie about their size. The outcome must be a normal return (a damaged JPEG's problems are
recorded in ``Slide.problems``, the documented warning) or a GigasegError subclass: never another
exception (a traceback), a hang (each example runs under an alarm) or unbounded memory (each
example runs under an address-space limit, so that an allocation sized by a damaged header fails
as a MemoryError, which counts as a failure here). The lying headers run in a child process with
its own memory limit and timeout. The whole file takes well under a minute.

``GIGASEG_FUZZ_SCALE=20 pytest tests/test_fuzz.py`` runs 20 times as many examples, drawn at
random rather than derandomized: a longer hunt, by hand.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import in_ci, repeated_tile_tiff

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # the test extra installs it; CI must have it
    if in_ci():
        raise
    pytest.skip("fuzzing needs hypothesis: pip install 'gigaseg[test]'", allow_module_level=True)

from gigaseg import GigasegError

MPP = 0.5
_SCALE = int(os.environ.get("GIGASEG_FUZZ_SCALE", "1"))
_SETTINGS = {"deadline": None, "derandomize": _SCALE == 1, "database": None,
             "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}
_HEADROOM = 2 << 30  # bytes of address space an example may add to the process


# --- limits --------------------------------------------------------------------------------------


def _address_space() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")  # pragma: no cover


@contextlib.contextmanager
def bounded(seconds: int = 20):
    """Run the block under an alarm (a hang fails) and an address-space limit of the process's
    size plus ``_HEADROOM`` (an allocation sized by a damaged header fails with MemoryError)."""
    def boom(*_):
        raise TimeoutError(f"a reader ran for {seconds} s: it hangs")

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + _HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    previous = signal.signal(signal.SIGALRM, boom)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, previous)


def survives(read, path: Path) -> str:
    """Run ``read(path)`` bounded; return "ok" or the GigasegError's class name, fail on anything else."""
    try:
        with bounded():
            read(path)
    except GigasegError as exc:
        return type(exc).__name__
    except BaseException as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{path.name}: {type(exc).__name__}: {exc}"[:2000])
    return "ok"


# --- mutations -----------------------------------------------------------------------------------


@st.composite
def mutations(draw, size: int):
    """A damage to a file of ``size`` bytes: a truncation, bit flips, or an overwritten run."""
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite"]))
    if kind == "truncate":
        return ("truncate", draw(st.integers(0, size - 1)))
    if kind == "flip":
        return ("flip", draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 7)), min_size=1,
                                      max_size=8)))
    start = draw(st.integers(0, size - 1))
    return ("overwrite", start, draw(st.binary(min_size=1, max_size=64)))


def mutate(data: bytes, mutation) -> bytes:
    if mutation[0] == "truncate":
        return data[: mutation[1]]
    out = bytearray(data)
    if mutation[0] == "flip":
        for pos, bit in mutation[1]:
            out[pos] ^= 1 << bit
        return bytes(out)
    _, start, chunk = mutation
    out[start : start + len(chunk)] = chunk
    return bytes(out[: len(data)])


# --- the seed files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Small valid files of each kind, as bytes, and a clean region store."""
    import tifffile
    import torch
    from PIL import Image

    from gigaseg import UNet, preset, save_checkpoint
    from gigaseg.store import RegionStore

    d = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal(180, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
    out: dict[str, bytes] = {}
    for name, kw in {"tiled-jpeg.tif": {"tile": (16, 16), "compression": "jpeg"},
                     "tiled-zlib.tif": {"tile": (16, 16), "compression": "zlib"},
                     "strips.tif": {"rowsperstrip": 8, "compression": "zlib"}}.items():
        buf = io.BytesIO()
        tifffile.imwrite(buf, rgb, photometric="rgb", resolution=(1e4 / MPP, 1e4 / MPP),
                         resolutionunit="CENTIMETER", metadata=None, **kw)
        out[name] = buf.getvalue()
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt)
        out[f"image.{fmt.lower()}"] = buf.getvalue()
    mask = (rng.random((48, 64)) > 0.5).astype(np.uint8)
    buf = io.BytesIO()
    np.save(buf, mask)
    out["mask.npy"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(mask * 255).save(buf, "PNG")
    out["mask.png"] = buf.getvalue()
    out["mask.geojson"] = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"classification": {"name": "Tissue"}},
         "geometry": {"type": "Polygon", "coordinates": [[[2, 2], [60, 3], [50, 40], [2, 2]],
                                                        [[20, 10], [30, 10], [25, 20], [20, 10]]]}}]}).encode()
    torch.manual_seed(0)
    save_checkpoint(d / "ck.pt", UNet(preset("tiny")), mpp=MPP)
    out["ck.pt"] = (d / "ck.pt").read_bytes()
    store = RegionStore.create(d / "store")
    store.add_region("r", rgb, mask, meta={"mpp": MPP})
    return out, d / "store"


# --- the readers -----------------------------------------------------------------------------------


def read_slide(path: Path) -> None:
    from gigaseg.slides import open_slide

    with open_slide(path, mpp=MPP) as s:
        w, h = s.dimensions
        s.read_region((0, 0), 0, (min(w, 64), min(h, 64)))
        s.read_region_at_mpp((0, 0), 2 * MPP, (8, 8))
        assert all(isinstance(p, str) for p in s.problems)


def read_mask(path: Path) -> None:
    from gigaseg.prepare import _MaskImage

    m = _MaskImage(path, (64, 48))
    m.strip(np.arange(48) + 0.5, np.arange(64) + 0.5)


def read_geojson(path: Path) -> None:
    from gigaseg.geojson import GeojsonMask

    g = GeojsonMask(path, slide_size=(64, 48))
    g.strip(0, 48, 64)
    assert all(isinstance(w, str) for w in g.warnings)


def read_checkpoint(path: Path) -> None:
    from gigaseg import load_model

    load_model(path)


def read_store(path: Path) -> None:
    from gigaseg.store import RegionStore

    store = RegionStore(path)
    for region in store:
        np.asarray(region.image[0:8])
        np.asarray(region.mask[0:8])


# --- damaged files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiled-jpeg.tif", "tiled-zlib.tif", "strips.tif", "image.png", "image.jpeg"])
def test_damaged_slides(seeds, tmp_path, name):
    data = seeds[0][name]

    @settings(max_examples=40 * _SCALE, **_SETTINGS)
    @given(mutations(len(data)))
    def run(mutation):
        path = tmp_path / name
        path.write_bytes(mutate(data, mutation))
        survives(read_slide, path)

    run()


@pytest.mark.parametrize("name", ["mask.npy", "mask.png"])
def test_damaged_masks(seeds, tmp_path, name):
    data = seeds[0][name]

    @settings(max_examples=40 * _SCALE, **_SETTINGS)
    @given(mutations(len(data)))
    def run(mutation):
        path = tmp_path / name
        path.write_bytes(mutate(data, mutation))
        survives(read_mask, path)

    run()


def test_damaged_geojson(seeds, tmp_path):
    data = seeds[0]["mask.geojson"]

    @settings(max_examples=60 * _SCALE, **_SETTINGS)
    @given(mutations(len(data)))
    def run(mutation):
        path = tmp_path / "mask.geojson"
        path.write_bytes(mutate(data, mutation))
        survives(read_geojson, path)

    run()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "features", "geometry", "coordinates", "properties", "classification", "name",
                         "geometries"]) | st.text(max_size=4), children, max_size=4),
    max_leaves=20,
)
_TYPES = st.sampled_from(["FeatureCollection", "Feature", "Polygon", "MultiPolygon", "GeometryCollection",
                          "Point", "LineString"])


@st.composite
def geojson_like(draw):
    """Objects shaped like GeoJSON with anything in their places."""
    coords = st.lists(st.lists(st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True)),
                               max_size=6), max_size=3)
    geometry = st.fixed_dictionaries({"type": _TYPES, "coordinates": coords | _JSON})
    feature = st.fixed_dictionaries({"type": st.just("Feature"), "geometry": geometry | _JSON,
                                     "properties": _JSON})
    return draw(st.one_of(st.fixed_dictionaries({"type": st.just("FeatureCollection"),
                                                 "features": st.lists(feature | _JSON, max_size=3)}),
                          feature, geometry, _JSON))


def test_geojson_shaped_nonsense(tmp_path):
    @settings(max_examples=120 * _SCALE, **_SETTINGS)
    @given(geojson_like())
    def run(obj):
        path = tmp_path / "x.geojson"
        path.write_text(json.dumps(obj))
        survives(read_geojson, path)

    run()


def test_damaged_checkpoints(seeds, tmp_path):
    data = seeds[0]["ck.pt"]

    @settings(max_examples=40 * _SCALE, **_SETTINGS)
    @given(mutations(len(data)))
    def run(mutation):
        path = tmp_path / "ck.pt"
        path.write_bytes(mutate(data, mutation))
        survives(read_checkpoint, path)

    run()


@pytest.mark.parametrize("member", ["store.json", "r/region.json", "r/image.npy", "r/mask.npy"])
def test_damaged_stores(seeds, tmp_path, member):
    import shutil

    clean = seeds[1]
    data = (clean / member).read_bytes()

    @settings(max_examples=30 * _SCALE, **_SETTINGS)
    @given(mutations(len(data)))
    def run(mutation):
        store = tmp_path / "store"
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(clean, store)
        (store / member).write_bytes(mutate(data, mutation))
        survives(read_store, store)

    run()


# --- lying headers, in a child process with its own limits -------------------------------------------


def lying_tiff(width: int, height: int, tile: int, *, whole_tile: bool = False) -> bytes:
    """A small tiled deflate TIFF whose header says ``width`` x ``height``: every tile is one white
    tile (``whole_tile``: a complete one, else a short one that fails to decode)."""
    tile_data = zlib.compress(b"\xff" * ((tile if whole_tile else min(tile, 256)) ** 2 * 3), 9)
    n = min(-(-width // tile) * -(-height // tile), 2**16)  # too few offsets for a huge image: refused
    return repeated_tile_tiff(width, height, tile, tile_data, n, MPP)


def lying_png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 100, 50)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def lying_npy(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\x01" * 64


_CHILD = """
import json, resource, sys, traceback
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY))
sys.path.insert(0, {tests!r})
import test_fuzz as t
from gigaseg import GigasegError
out = []
for kind, path in json.loads(sys.argv[1]):
    try:
        getattr(t, "read_" + kind)(__import__("pathlib").Path(path))
        out.append("ok")
    except GigasegError as exc:
        out.append(type(exc).__name__)
    except BaseException as exc:
        out.append("FAIL " + path + ": " + type(exc).__name__ + ": " + str(exc)[:300])
print(json.dumps(out))
"""

_SIZES = st.integers(1, 2**32 - 1)


def test_lying_headers_are_refused_in_bounded_memory_and_time(tmp_path):
    """Headers that claim up to 2**32 pixels a side: refused or read, in a child with 3 GiB of
    address space, within 120 s for all of them."""
    cases: list[tuple[str, str]] = []

    @settings(max_examples=12 * _SCALE, **_SETTINGS)
    @given(_SIZES, _SIZES, st.sampled_from([16, 256, 4096, 2**16, 2**20]), st.integers(1, 2**31 - 1))
    def collect(w, h, tile, side):
        i = len(cases)
        (tmp_path / f"{i}.tif").write_bytes(lying_tiff(w, h, tile))
        (tmp_path / f"{i}.png").write_bytes(lying_png(min(w, 2**31 - 1), min(h, 2**31 - 1)))
        (tmp_path / f"{i}.npy").write_bytes(lying_npy((side, side)))
        cases.extend([("slide", str(tmp_path / f"{i}.tif")), ("slide", str(tmp_path / f"{i}.png")),
                      ("mask", str(tmp_path / f"{i}.tif")), ("mask", str(tmp_path / f"{i}.png")),
                      ("mask", str(tmp_path / f"{i}.npy"))])

    collect()
    # the tester's file: 10**6 x 10**6 pixels in about 0.5 MB
    (tmp_path / "big.tif").write_bytes(lying_tiff(10**6, 10**6, 4096, whole_tile=True))
    cases.append(("slide", str(tmp_path / "big.tif")))
    code = _CHILD.format(tests=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = json.loads(proc.stdout.splitlines()[-1])
    failed = [o for o in outcomes if o.startswith("FAIL")]
    assert not failed, "\n".join(failed)
    assert len(outcomes) == len(cases)
