"""``gigaseg predict --shard I/N``: the tasks of a job array predict disjoint shares that cover the list."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from gigaseg import UNet, preset
from gigaseg.checkpoint import save_checkpoint
from gigaseg.cli import main


@pytest.fixture
def batch(tmp_path):
    rng = np.random.default_rng(0)
    slides = []
    for i in range(3):
        path = tmp_path / f"s{i}.tif"
        tifffile.imwrite(path, rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8))
        slides.append(str(path))
    ck = save_checkpoint(tmp_path / "ck.pt", UNet(preset("tiny")), mpp=1.0)
    return slides, str(ck)


def test_shards_cover_the_slides_once_each_with_their_own_configuration(tmp_path, batch):
    slides, ck = batch
    out = tmp_path / "out"
    for i in range(2):
        assert main(["predict", *slides, "--model", ck, "--mpp", "1", "--out", str(out), "--shard", f"{i}/2",
                     "--no-progress"]) == 0
    for s in ("s0", "s1", "s2"):
        assert (out / f"{s}.mask.tiff").is_file()
    assert sorted(p.name for p in out.glob("predict-config*.json")) == [
        "predict-config.shard-0-of-2.json", "predict-config.shard-1-of-2.json"]
    one = tmp_path / "one"
    assert main(["predict", slides[0], "--model", ck, "--mpp", "1", "--out", str(one), "--shard", "0/1",
                 "--no-progress"]) == 0
    assert (one / "s0.mask.tiff").read_bytes() == (out / "s0.mask.tiff").read_bytes()


@pytest.mark.parametrize("value", ["2/2", "-1/2", "1", "a/b"])
def test_a_bad_shard_is_refused_by_the_parser(tmp_path, batch, value, capsys):
    slides, ck = batch
    with pytest.raises(SystemExit) as exc:
        main(["predict", *slides, "--model", ck, "--out", str(tmp_path / "o"), f"--shard={value}"])
    assert exc.value.code == 2 and "--shard" in capsys.readouterr().err
