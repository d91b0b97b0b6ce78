"""Shared fixtures. Real slides come from ../shared/data/real beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def in_ci() -> bool:
    """Whether this run is CI's (``CI=true``), where nothing that the checks need may be missing."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def need_real(*paths: Path) -> None:
    """Skip the test when a real-data file is absent, with the path named; under ``CI=true`` fail
    instead, so that the real-slide checks cannot vanish from CI unnoticed."""
    for path in paths:
        if not Path(path).exists():
            message = f"real data not found: {path} (it lives in ../shared/data/real; see SOURCES.md there)"
            if in_ci():
                pytest.fail(message + "; CI=true needs it", pytrace=False)
            pytest.skip(message)


@pytest.fixture
def real_data() -> Path:
    """The folder of real slides; the test is skipped when it is absent (fails under CI=true)."""
    need_real(REAL_DATA)
    return REAL_DATA


ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """Import a script of the repository (``scripts/...`` or ``benchmarks/...``) as a module."""
    import importlib.util

    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def repeated_tile_tiff(width: int, height: int, tile: int, tile_data: bytes, n: int, mpp: float) -> bytes:
    """The bytes of a tiled, deflate RGB TIFF whose header says ``width`` x ``height`` and whose
    ``n`` tile offsets all point at one compressed tile, ``tile_data``: a file that lies about its
    size (the readers' bounds are tested on it)."""
    import struct

    out = bytearray(b"II*\x00\x00\x00\x00\x00")

    def add(b: bytes) -> int:
        off = len(out)
        out.extend(b)
        if len(out) % 2:
            out.append(0)
        return off

    data_off = add(tile_data)
    offsets = add(struct.pack(f"<{n}I", *([data_off] * n)))
    counts = add(struct.pack(f"<{n}I", *([len(tile_data)] * n)))
    bps = add(struct.pack("<3H", 8, 8, 8))
    res = add(struct.pack("<II", int(1e4 / mpp), 1))
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, bps), (259, 3, 1, 8), (262, 3, 1, 2),
            (277, 3, 1, 3), (282, 5, 1, res), (283, 5, 1, res), (284, 3, 1, 1), (296, 3, 1, 3),
            (322, 4, 1, tile), (323, 4, 1, tile), (324, 4, n, offsets), (325, 4, n, counts)]
    ifd = len(out)
    out.extend(struct.pack("<H", len(tags)))
    for tag, typ, count, value in tags:
        out.extend(struct.pack("<HHIHH", tag, typ, count, value, 0) if typ == 3 and count == 1
                   else struct.pack("<HHII", tag, typ, count, value))
    out.extend(struct.pack("<I", 0))
    out[4:8] = struct.pack("<I", ifd)
    return bytes(out)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (for a test's gloo rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_entry(rank: int, world: int, port: int, out: str, fn, args: tuple) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # an error in a rank reaches the parent (mp.spawn raises it); the others then wait at most this
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        result = fn(rank, world, *args)
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(out) / f"rank{rank}.pt")


def spawn_ranks(tmp_path: Path, world: int, fn, *args, preload: tuple[str, ...] = ()) -> list:
    """``fn(rank, world, *args)`` (a module-level function) on ``world`` gloo ranks; their results,
    by rank.

    The ranks are forked from a fork server where one exists; ``preload`` names modules it imports
    once (and does no work with: forking it is safe), so that a test does not pay for those
    imports in every rank.
    """
    import multiprocessing

    import torch
    import torch.multiprocessing as mp

    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if method == "forkserver" and preload:
        multiprocessing.set_forkserver_preload(list(preload))
    mp.start_processes(_rank_entry, args=(world, free_port(), str(tmp_path), fn, args), nprocs=world, join=True,
                       start_method=method)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


def grad_error(model, ref_grads, tol: float, what: str) -> float:
    """Each trainable parameter's ``.grad`` against ``ref_grads`` (the reference gradients, in the
    order of the model's trainable parameters): a reference of zero fails, as does a relative
    error above ``tol``. Returns the largest error and clears ``.grad``."""
    worst = 0.0
    for (name, p), g in zip(((n, p) for n, p in model.named_parameters() if p.requires_grad), ref_grads):
        assert float(g.norm()) > 0, f"{name}: the reference gradient is zero; pick another seed"
        err = float((p.grad - g).norm() / g.norm())
        assert err <= tol, f"{name}: relative gradient error {err:.2e} > {tol:.0e} ({what})"
        worst = max(worst, err)
    model.zero_grad(set_to_none=True)
    return worst


def stamp_ignore(mask, tile: int, rng, radii: tuple[float, float] = (0.12, 0.2)) -> None:
    """Write 255 (ignore) into ``mask`` where the engine's tiling is most likely to get it wrong:
    two blobs (radii as fractions of the short side), bands across the tile borders (multiples of
    ``tile``), one whole tile and 3% of the pixels, drawn from ``rng``."""
    import numpy as np

    h, w = mask.shape
    yy, xx = np.mgrid[:h, :w]
    for cy, cx, r in [(0.3 * h, 0.25 * w, radii[0] * min(h, w)), (0.7 * h, 0.7 * w, radii[1] * min(h, w))]:
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 255
    for b in range(tile, max(h, w), tile):
        mask[max(0, b - 2):b + 2, : w // 2] = 255  # across a row of tile borders
        mask[h // 2:, max(0, b - 1):b + 3] = 255  # across a column of them
    mask[:tile, tile:2 * tile] = 255  # a whole tile (when the tile is `tile`)
    mask[rng.random((h, w)) < 0.03] = 255
