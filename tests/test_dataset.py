"""Reading a store for training: dihedral index transforms, colour jitter, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gigaseg.dataset import DIHEDRAL, Dihedral, RegionDataset, RegionView, StainJitter
from gigaseg.errors import ConfigError, InputError
from gigaseg.store import RegionStore, StoreError


def _store(tmp_path, shapes=((7, 11),), fmt="npy"):
    store = RegionStore.create(tmp_path / "s")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(shapes):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = rng.integers(0, 2, (h, w), dtype=np.uint8)
        mask[0, 0] = 255
        store.add_region(f"r{i}", img, mask, split="val" if i == len(shapes) - 1 and len(shapes) > 1 else "train",
                         format=fmt)
    return store


def test_dihedral_group_is_complete_and_matches_rot90_flip():
    a = np.arange(12).reshape(3, 4)
    ours = {DIHEDRAL[i].apply(a).tobytes() + bytes(DIHEDRAL[i].apply(a).shape) for i in range(8)}
    ref = set()
    for k in range(4):
        for flip in (False, True):
            r = np.rot90(np.fliplr(a) if flip else a, k)
            ref.add(r.tobytes() + bytes(r.shape))
    assert len(ours) == 8 and ours == ref
    assert DIHEDRAL[0] == Dihedral() and DIHEDRAL[0].apply(a) is a


@pytest.mark.parametrize("fmt", ["npy", "zarr"])
def test_every_slice_of_every_transform_matches_whole_transform(tmp_path, fmt):
    if fmt == "zarr":
        pytest.importorskip("zarr")
    # zarr reads cost ~0.5 ms each: a smaller region keeps the exhaustive loop fast.
    store = _store(tmp_path, shapes=((5, 7),) if fmt == "npy" else ((3, 5),), fmt=fmt)
    region = store.regions[0]
    image, mask = np.asarray(region.image[:]), np.asarray(region.mask[:])
    for t in DIHEDRAL:
        for base, full in ((region.image, image), (region.mask, mask)):
            view = RegionView(base, t)
            ref = t.apply(full)
            assert view.shape == ref.shape and view.ndim == ref.ndim and view.dtype == np.uint8
            hv, wv = ref.shape[:2]
            for y0, x0 in itertools.product(range(hv + 1), range(wv + 1)):
                for y1, x1 in itertools.product(range(y0, hv + 1), range(x0, wv + 1)):
                    got = view[y0:y1, x0:x1]
                    assert isinstance(got, np.ndarray) and got.flags.c_contiguous and got.flags.writeable
                    assert np.array_equal(got, ref[y0:y1, x0:x1]), (t, y0, y1, x0, x1)
            assert np.array_equal(np.asarray(view), ref)


def test_view_indexing_forms(tmp_path):
    store = _store(tmp_path, shapes=((6, 9),))
    region = store.regions[0]
    full = np.asarray(region.image[:])
    t = DIHEDRAL[5]
    view, ref = RegionView(region.image, t), t.apply(full)
    assert view.shape == (9, 6, 3) and len(view) == 9
    assert np.array_equal(view[2:-1, -4:], ref[2:-1, -4:])
    assert np.array_equal(view[3], ref[3]) and np.array_equal(view[:, 2], ref[:, 2])
    assert np.array_equal(view[1, 4], ref[1, 4])
    assert np.array_equal(view[1:3, 2:5, :], ref[1:3, 2:5, :]) and np.array_equal(view[1:3, ...], ref[1:3])
    assert np.array_equal(view[5:100, 0:100], ref[5:, :])
    assert view[4:2, 0:3].shape == (0, 3, 3)
    with pytest.raises(InputError, match="step 1"):
        view[::2, :]
    with pytest.raises(IndexError):
        view[9]
    with pytest.raises(InputError):
        view[[1, 2], :]


@pytest.mark.parametrize("kind", ["hed", "rgb"])
def test_jitter_tiles_read_in_pieces_equal_whole(tmp_path, kind):
    rng = np.random.default_rng(3)
    store = RegionStore.create(tmp_path / "s")
    img = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    img[:10] = 255  # glass
    store.add_region("a", img, np.ones((97, 131), np.uint8))
    jitter = StainJitter.draw(np.random.default_rng(7), kind, 0.2)
    for t in DIHEDRAL:
        view = RegionView(store["a"].image, t, jitter)
        whole = view[:, :]
        assert not np.array_equal(whole, t.apply(img))  # it does change colours
        hv, wv = view.shape[:2]
        for _ in range(6):
            ys = np.sort(rng.integers(0, hv + 1, 2))
            xs = np.sort(rng.integers(0, wv + 1, 2))
            pieces = [
                [view[a:b, c:d] for c, d in ((0, xs[0]), (xs[0], xs[1]), (xs[1], wv))]
                for a, b in ((0, ys[0]), (ys[0], ys[1]), (ys[1], hv))
            ]
            mosaic = np.concatenate([np.concatenate(row, axis=1) for row in pieces], axis=0)
            assert np.array_equal(mosaic, whole)
        # and equals the jitter of the whole transformed array
        assert np.array_equal(whole, jitter(np.ascontiguousarray(t.apply(img))))


def test_hed_jitter_identity_and_glass():
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(StainJitter("hed")(img), img)
    assert np.array_equal(StainJitter("rgb")(img), img)
    assert StainJitter.draw(np.random.default_rng(0), "hed", 0.0) is None
    assert StainJitter.draw(np.random.default_rng(0), "none", 0.1) is None
    with pytest.raises(ConfigError, match="jitter"):
        StainJitter.draw(np.random.default_rng(0), "hsv", 0.1)


def test_dataset_samples_are_deterministic_and_aligned(tmp_path):
    store = _store(tmp_path, shapes=((13, 21), (9, 9), (10, 12)))
    ds = RegionDataset(store, split="train", augment=True, seed=4)
    assert len(ds) == 2 and [r.name for r in ds.regions] == ["r0", "r1"]
    seen = set()
    for epoch in range(12):
        s = ds.sample(0, epoch)
        again = RegionDataset(tmp_path / "s", split="train", augment=True, seed=4).sample(0, epoch)
        assert s.transform == again.transform and s.jitter == again.jitter
        region = store["r0"]
        full_img, full_mask = np.asarray(region.image[:]), np.asarray(region.mask[:])
        ref_mask = s.transform.apply(full_mask)
        assert s.mask.shape == ref_mask.shape == s.shape and s.image.shape == ref_mask.shape + (3,)
        assert np.array_equal(s.mask[:, :], ref_mask)  # mask: no colour change, same geometry
        ref_img = s.transform.apply(full_img)
        if s.jitter is not None:
            ref_img = s.jitter(np.ascontiguousarray(ref_img))
        assert np.array_equal(s.image[:, :], ref_img)
        seen.add(s.transform)
    assert len(seen) >= 4  # the transforms vary with the epoch
    assert ds[1].name == "r1" and ds[1].epoch == 0
    with pytest.raises(IndexError):
        ds.sample(2)


def test_dataset_without_augmentation_is_the_stored_array(tmp_path):
    store = _store(tmp_path, shapes=((13, 21),))
    s = RegionDataset(store, split=None, augment=False)[0]
    assert s.transform == DIHEDRAL[0] and s.jitter is None
    assert np.array_equal(s.image[2:9, 3:20], store["r0"].image[2:9, 3:20])
    assert np.array_equal(np.asarray(s.mask), store["r0"].mask[:])


def test_dataset_bad_input(tmp_path):
    with pytest.raises(StoreError, match="not a gigaseg region store"):
        RegionDataset(tmp_path)
    RegionStore.create(tmp_path / "empty")
    with pytest.raises(StoreError, match="no regions in split 'train'"):
        RegionDataset(tmp_path / "empty")
    store = _store(tmp_path)
    (store["r0"].path / "mask.npy").unlink()
    with pytest.raises(StoreError, match="has no mask"):
        RegionDataset(store)
    with pytest.raises(ConfigError, match="jitter"):
        RegionDataset(store, jitter="hsv")


def test_bench_store_prints_one_json(tmp_path, capsys):
    import json

    from gigaseg.cli import main

    store = _store(tmp_path, shapes=((300, 400),))
    rc = main(["bench", "store", "--store", str(store.path), "--tile", "128", "--halo", "16", "--tiles", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out)
    assert result["benchmark"] == "store" and result["tile_side_with_halo"] == 160
    assert result["dihedral+jitter_warm_MBps"] > 0


def test_engine_trains_on_a_rotated_jittered_view(tmp_path):
    """The engine reads RegionView tiles: same loss and gradients as on the materialized arrays."""
    torch = pytest.importorskip("torch")
    engine = pytest.importorskip("gigaseg.engine")
    from gigaseg.model import UNet, preset

    store = RegionStore.create(tmp_path / "s")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 72, 3), dtype=np.uint8)
    mask = (img[..., 1] > 120).astype(np.uint8)
    store.add_region("a", img, mask)
    ds = RegionDataset(store, augment=True, seed=1)
    epoch = next(e for e in range(50) if ds.params(0, e)[0].transpose)  # a transform that swaps H and W
    s = ds.sample(0, epoch)
    assert s.image.shape == (72, 40, 3) and s.jitter is not None
    torch.manual_seed(0)
    model = UNet(preset("tiny")).double()
    loss_view = engine.tiled_backward(model, s.image, s.mask, tile=16, device="cpu")
    grads_view = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss_arr = engine.tiled_backward(model, np.asarray(s.image), np.asarray(s.mask), tile=16, device="cpu")
    assert loss_view == pytest.approx(loss_arr, rel=1e-12)
    for a, b in zip(grads_view, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_hed_jitter_colour_table_equals_the_direct_computation():
    """Large tiles go through a tabulated jitter (NOTE [Colour table]); it must give the same
    bytes as the per-pixel computation, for every colour."""
    from gigaseg.dataset import _LUT3_MIN_PIXELS

    jitter = StainJitter.draw(np.random.default_rng(3), "hed", 0.3)
    side = int(np.ceil(np.sqrt(_LUT3_MIN_PIXELS)))
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    tile[0, :256] = np.stack([np.arange(256)] * 3, axis=-1)  # greys, black and white included
    fast = jitter(tile)
    assert fast.shape == tile.shape and fast.dtype == np.uint8 and fast.flags.c_contiguous
    assert np.array_equal(fast, jitter._compute(tile))
    # the table itself: all 2^24 colours
    from gigaseg.dataset import _hed_lut3

    lut = _hed_lut3(jitter).view(np.uint8).reshape(256, 256, 256, 4)
    for b in (0, 77, 255):
        grid = np.empty((256, 256, 3), np.uint8)
        grid[..., 0] = np.arange(256)[None, :]
        grid[..., 1] = np.arange(256)[:, None]
        grid[..., 2] = b
        assert np.array_equal(lut[b, :, :, :3], jitter._compute(grid))


def test_view_kernels_give_numpy_bytes_for_large_crops(tmp_path, monkeypatch):
    """Crops of a megapixel and more are transformed and jittered by one compiled pass (NOTE
    [View kernels]): the same bytes as numpy's path and as the reference definition, for every
    transform, with and without the HED jitter."""
    from gigaseg import _view_kernels
    from gigaseg.dataset import _LUT3_MIN_PIXELS

    if not _view_kernels.enabled():
        pytest.skip("numba is not importable here: numpy's path is the only one")
    rng = np.random.default_rng(5)
    h, w = 1030, 1100
    assert (h - 5) * (w - 10) >= _LUT3_MIN_PIXELS
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[:40] = 255
    mask = rng.integers(0, 3, (h, w), dtype=np.uint8)
    store = RegionStore.create(tmp_path / "s")
    store.add_region("a", img, mask)
    region = store["a"]
    jitter = StainJitter.draw(np.random.default_rng(9), "hed", 0.2)
    for t in DIHEDRAL:
        ref_img, ref_mask = t.apply(img), t.apply(mask)
        hv, wv = ref_img.shape[:2]
        window = (slice(3, hv - 2), slice(4, wv - 6))
        for j in (None, jitter):
            view = RegionView(region.image, t, j)
            fast = view[window]
            monkeypatch.setenv("GIGASEG_NO_CPU_KERNELS", "1")
            slow = view[window]
            monkeypatch.delenv("GIGASEG_NO_CPU_KERNELS")
            ref = ref_img[window] if j is None else j._compute(np.ascontiguousarray(ref_img[window]))
            assert fast.flags.c_contiguous and fast.flags.writeable
            assert np.array_equal(fast, slow) and np.array_equal(fast, ref), (t, j)
        got = RegionView(region.mask, t)[window]
        assert got.flags.c_contiguous and np.array_equal(got, ref_mask[window]), t


def test_compiled_colour_table_equals_numpys_for_every_colour(monkeypatch):
    """NOTE [Colour table, compiled]: the kernel's table and numpy's agree on all 2^24 colours."""
    from gigaseg import _view_kernels, dataset

    if not _view_kernels.enabled():
        pytest.skip("numba is not importable here: numpy's table is the only one")
    for strength, seed in ((0.05, 0), (0.5, 1)):
        jitter = StainJitter.draw(np.random.default_rng(seed), "hed", strength)
        dataset._LUT3_CACHE.clear()
        compiled = dataset._hed_lut3(jitter).copy()
        dataset._LUT3_CACHE.clear()
        monkeypatch.setenv("GIGASEG_NO_CPU_KERNELS", "1")
        slow = dataset._hed_lut3(jitter)
        monkeypatch.delenv("GIGASEG_NO_CPU_KERNELS")
        dataset._LUT3_CACHE.clear()
        assert compiled.dtype == np.uint32 and compiled.shape == (1 << 24,)
        assert np.array_equal(compiled, slow)


@pytest.mark.parametrize("kernels", [True, False])
def test_parallel_readers_build_the_colour_table_once(monkeypatch, kernels):
    """Several crop readers (NOTE [Read ahead]) ask for a step's colour table at the same time;
    it is built once and every reader gets the same bytes (compiled or numpy's build)."""
    import threading

    from gigaseg import _view_kernels, dataset

    if kernels and not _view_kernels.enabled():
        pytest.skip("numba is not importable here")
    if not kernels:
        monkeypatch.setenv("GIGASEG_NO_CPU_KERNELS", "1")
    dataset._LUT3_CACHE.clear()
    built = []
    real_compute, real_kernel = StainJitter._compute, _view_kernels.hed_table

    def counting_compute(self, tile):  # numpy's build: count its first piece (blue 0)
        if tile.shape == (dataset._LUT3_CHUNK * 256, 256, 3) and tile[0, 0, 2] == 0:
            built.append(threading.get_ident())
        return real_compute(self, tile)

    def counting_kernel(*args):
        done = real_kernel(*args)
        if done:
            built.append(threading.get_ident())
        return done

    monkeypatch.setattr(StainJitter, "_compute", counting_compute)
    monkeypatch.setattr(_view_kernels, "hed_table", counting_kernel)
    jitter = StainJitter.draw(np.random.default_rng(5), "hed", 0.2)
    tables = [None] * 4
    start = threading.Barrier(4)

    def worker(i):
        start.wait()
        tables[i] = dataset._hed_lut3(jitter)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1  # one table, by one of the threads
    assert all(t is tables[0] for t in tables)


def test_strips_read_by_several_threads_give_the_same_bytes(monkeypatch):
    """NOTE [Strips]: a view with threads > 1 splits a large read into strips of rows read in
    parallel (and builds the colour table in parallel); every transform gives the same bytes
    as one thread, and so does the colour table."""
    from gigaseg import dataset

    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (1600, 1500, 3), dtype=np.uint8)
    msk = (rng.random((1600, 1500)) < 0.5).astype(np.uint8)
    jitter = StainJitter.draw(np.random.default_rng(9), "hed", 0.2)
    assert 1500 * 1500 >= dataset._STRIP_MIN_PIXELS
    dataset._LUT3_CACHE.clear()
    one_thread_table = dataset._hed_lut3(jitter).copy()
    dataset._LUT3_CACHE.clear()
    assert np.array_equal(dataset._hed_lut3(jitter, 3), one_thread_table)
    for t in DIHEDRAL:
        one = RegionView(img, t, jitter)[20:1540, 10:1500]
        many = RegionView(img, t, jitter, threads=3)
        dataset._LUT3_CACHE.clear()  # the parallel read builds the table itself
        assert np.array_equal(many[20:1540, 10:1500], one), t
        assert np.array_equal(RegionView(msk, t, None, threads=4)[:, :], RegionView(msk, t)[:, :]), t
    blocks = []
    real_read_block = RegionView._read_block
    monkeypatch.setattr(RegionView, "_read_block", lambda self, *a: blocks.append(a) or real_read_block(self, *a))
    RegionView(img, DIHEDRAL[3], jitter, threads=3)[:, :]
    assert len(blocks) == 3  # three strips
    with pytest.raises(ConfigError, match="threads must be a positive integer"):
        RegionView(img, DIHEDRAL[0], None, threads=0)


def test_views_with_different_jitters_read_in_parallel_do_not_deadlock():
    """Two threads reading views with different jitters, each split into strips on the same
    pool: the colour table is built under a lock while its pieces run on the pool, so a strip
    must never wait for that lock (NOTE [Strips])."""
    import threading

    from gigaseg import dataset

    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (1500, 1500, 3), dtype=np.uint8)
    jitters = [StainJitter.draw(np.random.default_rng(s), "hed", 0.2) for s in (11, 12)]
    want = [RegionView(img, DIHEDRAL[1], j)[:, :] for j in jitters]
    got: dict = {}

    def reader(k: int) -> None:
        view = RegionView(img, DIHEDRAL[1], jitters[k], threads=2)
        for i in range(3):
            got[k, i] = view[:, :]

    dataset._LUT3_CACHE.clear()
    threads = [threading.Thread(target=reader, args=(k,), daemon=True) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "parallel reads with two jitters deadlocked"
    for (k, _), arr in got.items():
        assert np.array_equal(arr, want[k])
    assert len(got) == 6
