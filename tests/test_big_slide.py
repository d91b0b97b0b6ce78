"""benchmarks/big_slide.py: a large slide made of one repeated synthetic patch, pyramid included."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_script


def test_writes_a_repeating_pyramidal_slide(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("imagecodecs")
    big_slide = load_script("benchmarks/big_slide.py")
    path = big_slide.write_big_slide(tmp_path / "big.tiff", width=2500, height=1700, mpp=1.0, patch_side=512,
                                     seed=3, tile=256)
    assert [p.name for p in tmp_path.iterdir()] == ["big.tiff"]  # no temporary file left
    with tifffile.TiffFile(path) as tif:
        levels = [p for p in tif.pages]
        assert levels[0].shape == (1700, 2500, 3) and levels[0].is_tiled
        assert [p.shape[:2] for p in levels[1:]] == [(425, 625), (106, 156)]
        level0 = levels[0].asarray()
        res = levels[0].tags["XResolution"].value
    assert res[0] / res[1] == pytest.approx(10000.0)  # pixels per cm at 1 um/px
    # the patch repeats (up to JPEG noise): the tile at (0, 0) and the one a period later agree
    a, b = level0[:256, :256].astype(int), level0[512:768, 1024:1280].astype(int)
    assert np.abs(a - b).mean() < 1.0
    assert level0.std() > 5  # not blank: tissue and glass
