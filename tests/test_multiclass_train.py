"""gigaseg train and predict with a model of several classes (issue 21, item 2): stores whose masks
hold class indices and 255, per-class validation, checkpoints that name the classes, label TIFFs,
GeoJSON classes, and the refusals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from gigaseg import ConfigError, InputError, StoreError, TrainConfig, load_checkpoint, load_model, train
from gigaseg.cli import main
from gigaseg.store import RegionStore

CLASSES = ["background", "tissue", "pen"]
COLOURS = {0: (235, 235, 235), 1: (190, 90, 170), 2: (30, 40, 140)}


def _region(seed: int, h: int = 72, w: int = 88) -> tuple[np.ndarray, np.ndarray]:
    """An image of three flat colours with noise, its class mask, 255 (ignore) over a band and a blob."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    y0, x0 = rng.integers(4, 20, 2)
    mask[y0:y0 + 40, x0:x0 + 50] = 1
    mask[y0 + 10:y0 + 22, x0 + 30:x0 + 70] = 2
    image = np.zeros((h, w, 3), np.uint8)
    for k, rgb in COLOURS.items():
        image[mask == k] = rgb
    image = np.clip(image.astype(np.int16) + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
    mask[:3] = 255
    mask[50:56, 5:12] = 255
    return image, mask


def _store(path, classes=CLASSES, n_train=2, n_val=1, meta_classes=True, bad=None):
    s = RegionStore.create(path)
    for k in range(n_train + n_val):
        image, mask = _region(k)
        if bad is not None and k == 0:
            mask[bad[1], bad[0]] = bad[2]
        meta = {"mpp": 4.0, "mask_source": {"kind": "labels"}}
        if meta_classes:
            meta["classes"] = list(classes)
        s.add_region(f"r{k}", image, mask, meta=meta, split="train" if k < n_train else "val")
    return s.path


def _config(store, out, **kw) -> TrainConfig:
    base = dict(data=str(store), out=str(out), preset="tiny", steps=4, lr=0.05, warmup=1, val_every=2, ckpt_every=2,
                loss="ce+dice", progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("data") / "store")


@pytest.fixture(scope="module")
def run(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "a"
    return out, train(_config(store, out))


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_training_reads_the_classes_from_the_store_and_names_them_in_the_checkpoint(run):
    out, result = run
    assert result["classes"] == CLASSES and set(result["val_class_dice"]) == set(CLASSES)
    payload = load_checkpoint(out / "checkpoint.pt")
    assert payload["classes"] == CLASSES and payload["config"]["out_channels"] == 3
    assert payload["train_config"]["classes"] == CLASSES and payload["train_config"]["loss"] == "ce+dice"
    model, mpp = load_model(out / "checkpoint.pt")
    assert model.config.out_channels == 3 and mpp == 4.0
    from gigaseg.checkpoint import model_classes

    assert model_classes(model) == CLASSES
    log = _rows(out / "log.csv")
    assert [f"val_dice_{c}" for c in CLASSES] == list(log[0])[-3:] and log[-1]["val_dice_tissue"] != ""
    val = _rows(out / "val.csv")
    assert list(val[0]) == ["step", "region", "dice", *(f"dice_{c}" for c in CLASSES)]
    assert [r["region"] for r in val] == ["r2", "r2"]


def test_validation_counts_are_those_of_the_whole_region_argmax(run, store):
    """The per-class counts of evaluate_regions equal numpy's on the whole region's argmax, 255 left out;
    and the pooled per-class Dice is 2 I / (P + R) of the summed counts."""
    from gigaseg.training import evaluate_regions, pooled_class_dice

    out, _ = run
    model, _ = load_model(out / "checkpoint.pt")
    region = RegionStore(store)["r2"]
    rows = evaluate_regions(model, [region, region], classes=CLASSES, tile=16)
    with torch.no_grad():
        x = torch.from_numpy(np.array(region.image)).permute(2, 0, 1)[None].float() / 255
        pred = model(x)[0].argmax(0).numpy()
    ref = np.asarray(region.mask)
    valid = ref != 255
    expected = [[int(((pred == c) & (ref == c) & valid).sum()), int(((pred == c) & valid).sum()),
                 int(((ref == c) & valid).sum())] for c in range(3)]
    assert rows[0]["counts"] == expected
    wrong = [[i, p + 1, r] for i, p, r in expected]  # negative control: counts that include one more pixel
    assert rows[0]["counts"] != wrong
    dice = [2 * i / (p + r) if p + r else None for i, p, r in expected]
    assert [rows[0][f"dice_{c}"] for c in CLASSES] == [d if d is not None else "" for d in dice]
    pooled = pooled_class_dice(rows, CLASSES)
    assert pooled == dict(zip(CLASSES, [2 * 2 * i / (2 * p + 2 * r) if p + r else None for i, p, r in expected]))


def test_resume_keeps_the_classes(run, store, tmp_path):
    from gigaseg.training import resume_config

    out = tmp_path / "b"
    train(_config(store, out, steps=2))
    config = resume_config(out, steps=3)
    assert config.classes == CLASSES
    result = train(config)
    assert result["step"] == 3 and load_checkpoint(out / "checkpoint.pt")["classes"] == CLASSES


def _slide(path, seed=11, h=150, w=230):
    import tifffile

    rng = np.random.default_rng(seed)
    image, _ = _region(seed, h, w)
    image[rng.integers(0, h, 40), rng.integers(0, w, 40)] = COLOURS[2]
    tifffile.imwrite(path, image, tile=(128, 128), photometric="rgb", compression="zlib",
                     resolution=(1e4 / 4.0, 1e4 / 4.0), resolutionunit="CENTIMETER", metadata=None)
    return path, image


def test_predict_writes_a_label_tiff_a_geojson_class_per_label_and_the_class_areas(run, tmp_path):
    import tifffile

    from gigaseg import save_checkpoint

    out, _ = run
    slide, image = _slide(tmp_path / "slide.tif")
    model, _ = load_model(out / "checkpoint.pt")
    with torch.no_grad():  # four steps predict mostly background: centre each class's logits on the slide
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        model.head.conv.bias -= model(x)[0].flatten(1).median(1).values
    save_checkpoint(tmp_path / "model.pt", model, mpp=4.0, classes=CLASSES)
    assert main(["predict", str(slide), "--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "p"),
                 "--no-progress", "--memory-budget", "300MB", "--min-area", "0"]) == 0
    with torch.no_grad():
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        expected = model(x)[0].argmax(0).numpy().astype(np.uint8)  # the whole slide's labels
    with tifffile.TiffFile(tmp_path / "p" / "slide.mask.tiff") as tif:
        labels = tif.pages[0].asarray()
        assert tif.pages[0].description == "gigaseg class labels: 0 background; 1 tissue; 2 pen"
        assert all(set(np.unique(p.asarray())) <= {0, 1, 2} for p in tif.pages)
    assert np.array_equal(labels, expected)
    assert set(np.unique(labels)) == {0, 1, 2}  # negative control: not all one class
    summary = json.loads((tmp_path / "p" / "slide.json").read_text())
    assert summary["classes"] == CLASSES and "tissue_area_mm2" not in summary
    counts = np.bincount(labels.ravel(), minlength=3)
    assert summary["class_pixels_model_res"] == dict(zip(CLASSES, counts.tolist()))
    assert summary["class_area_mm2"]["tissue"] == pytest.approx(counts[1] * 16 / 1e6)
    features = json.loads((tmp_path / "p" / "slide.geojson").read_text())["features"]
    names = {f["properties"]["classification"]["name"] for f in features}
    assert names == {"tissue", "pen"}  # class 0, the background, is left out
    assert sum(summary["class_pieces"].values()) == summary["pieces"] == len(features)
    from gigaseg.geojson import rasterize_geojson

    drawn = rasterize_geojson(tmp_path / "p" / "slide.geojson", (labels.shape[1], labels.shape[0]), classes=["tissue"])
    assert (drawn.astype(bool) == (labels == 1)).mean() > 0.97
    from PIL import Image

    overlay = np.asarray(Image.open(tmp_path / "p" / "slide.overlay.png"))
    assert overlay.shape[:2] == labels.shape


def test_predict_labels_by_the_mean_over_orientations(run, tmp_path):
    """predict_slide(orientations=4) with a model of several classes: each pixel's class is the one of the
    largest mean softmax over the four orientations (tiled_predict's), and the summary counts those labels."""
    import tifffile

    from gigaseg import save_checkpoint
    from gigaseg.engine import tiled_predict
    from gigaseg.predict import predict_slide

    out, _ = run
    slide, image = _slide(tmp_path / "slide.tif", seed=12)
    model, _ = load_model(out / "checkpoint.pt")
    with torch.no_grad():  # as above: centre each class's logits on the slide, so that every class appears
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        model.head.conv.bias -= model(x)[0].flatten(1).median(1).values
    save_checkpoint(tmp_path / "model.pt", model, mpp=4.0, classes=CLASSES)
    summary = predict_slide(tmp_path / "model.pt", slide, tmp_path / "p", progress=False, orientations=4, min_area=0)
    expected = tiled_predict(model, image, orientations=4).argmax(-1)
    labels = tifffile.imread(tmp_path / "p" / "slide.mask.tiff")
    assert summary["orientations"] == 4 and set(np.unique(labels)) == {0, 1, 2}
    assert (labels == expected).mean() > 0.999  # ties between two classes' float sums may go either way
    assert not np.array_equal(labels, model(x)[0].argmax(0).detach().numpy())  # not the slide as it is alone
    counts = np.bincount(labels.ravel(), minlength=3)
    assert summary["class_pixels_model_res"] == dict(zip(CLASSES, counts.tolist()))


def test_refusals(store, run, tmp_path):
    out, _ = run
    # a mask value >= C, named with its region and position
    bad = _store(tmp_path / "bad", bad=(7, 30, 3))
    with pytest.raises(InputError, match=r"region 'r0' .*mask value 3 at \(x=7, y=30\).*0\.\.2 \(0 background"):
        train(_config(bad, tmp_path / "r1"))
    assert not (tmp_path / "r1").exists()
    # a store of 4 classes against a checkpoint of 3
    four = _store(tmp_path / "four", classes=[*CLASSES, "fold"])
    with pytest.raises(ConfigError, match=r"is a model of 3 classes \(background, tissue, pen\), but the store .* "
                                          r"trains 4 classes"):
        train(_config(four, tmp_path / "r2", init=str(out / "checkpoint.pt")))
    # classes given that are not the store's; a one-channel loss; several-class loss without classes
    with pytest.raises(ConfigError, match="differ from the classes of the store"):
        train(_config(store, tmp_path / "r3", classes=["a", "b", "c"]))
    with pytest.raises(ConfigError, match="is a one-channel loss.*'ce\\+dice'"):
        train(_config(store, tmp_path / "r4", loss="bce"))
    plain = _store(tmp_path / "plain", meta_classes=False)
    with pytest.raises(ConfigError, match="is a loss of several classes"):
        train(_config(plain, tmp_path / "r5"))
    with pytest.raises(ConfigError, match="appears twice"):
        TrainConfig(data="d", out="o", classes=["a", "a"], loss="ce").check()
    # regions that name different classes
    mixed = _store(tmp_path / "mixed")
    image, mask = _region(9)
    RegionStore(mixed).add_region("other", image, np.minimum(mask, 1), meta={"mpp": 4.0})
    with pytest.raises(StoreError, match="name different classes"):
        train(_config(mixed, tmp_path / "r6"))
    # probabilities of a several-class model
    from gigaseg.predict import predict_slide

    slide, _ = _slide(tmp_path / "s.tif")
    with pytest.raises(ConfigError, match="probabilities=True.*3 classes"):
        predict_slide(out / "checkpoint.pt", slide, tmp_path / "p", probabilities=True, progress=False)


def test_cli_classes_for_a_store_without_names(tmp_path, capsys):
    """--classes names the classes of a store whose regions do not; the summary line gives each class's Dice."""
    plain = _store(tmp_path / "plain", meta_classes=False)
    assert main(["train", "--data", str(plain), "--out", str(tmp_path / "run"), "--preset", "tiny", "--steps", "2",
                 "--classes", *CLASSES, "--loss", "ce", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "per class over all held-out regions: background" in err
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["classes"] == CLASSES


def test_prepare_keeps_the_class_indices_of_a_label_mask(tmp_path):
    """gigaseg prepare --classes: a label image's values are kept and the names recorded; a value >= C is refused."""
    slide, image = _slide(tmp_path / "slide.tif")
    labels = np.zeros(image.shape[:2], np.uint8)
    labels[20:60, 30:90] = 1
    labels[70:80, 100:200] = 2
    labels[:2] = 255
    np.save(tmp_path / "labels.npy", labels)
    store = tmp_path / "store"
    assert main(["prepare", str(slide), "--masks", str(tmp_path / "labels.npy"), "--size", "150x230", "--out",
                 str(store), "--classes", *CLASSES, "--no-progress"]) == 0
    region = RegionStore(store)["slide"]
    assert region.classes == CLASSES and np.array_equal(np.asarray(region.mask), labels)
    labels[5, 6] = 4
    np.save(tmp_path / "bad.npy", labels)
    from gigaseg.prepare import prepare_region

    with pytest.raises(InputError, match=r"values \[4\], but 3 classes are given"):
        prepare_region(RegionStore(store), slide, tmp_path / "bad.npy", (230, 150), classes=CLASSES, name="b",
                       progress=False)
    with pytest.raises(InputError, match="values \\[2\\] besides 0/1/255"):  # without classes: a tissue mask
        prepare_region(RegionStore(store), slide, tmp_path / "labels.npy", (230, 150), name="c", progress=False)


def _train_on_ranks(rank: int, world: int, store, out):
    return train(_config(store, out, steps=3, tile=32))


def test_two_ranks_share_validation_and_sum_each_class_counts(tmp_path):
    """Under a process group each rank validates its share of the regions; the per-class counts are
    summed over the ranks, and the run's per-class Dice is the single process's."""
    from conftest import spawn_ranks

    store = _store(tmp_path / "store", n_train=2, n_val=2)
    ref = train(_config(store, tmp_path / "one", steps=3, tile=32))
    r0, r1 = spawn_ranks(tmp_path, 2, _train_on_ranks, store, tmp_path / "two",
                         preload=("torch", "torch.distributed", "gigaseg", "gigaseg.training"))
    for result in (r0, r1):
        assert result["processes"] == 2 and result["classes"] == CLASSES
        assert set(result["val_dice"]) == {"r2", "r3"}
        for name in CLASSES:  # float32 sums in another order may move a pixel or two
            a, b = result["val_class_dice"][name], ref["val_class_dice"][name]
            assert (a is None and b is None) or a == pytest.approx(b, abs=0.02), name
    rows = _rows(tmp_path / "two" / "val.csv")
    assert [r["region"] for r in rows] == ["r2", "r3", "r2", "r3"]
    assert load_checkpoint(tmp_path / "two" / "checkpoint.pt")["classes"] == CLASSES


def test_the_qc_mapping_gives_every_synthetic_label_a_class():
    from conftest import load_script

    from gigaseg.synth import LABELS

    make_data = load_script("scripts/qc_model/make_data.py")
    lut = make_data.label_lut()
    assert all(lut[code] < len(make_data.QC_CLASSES) for code in LABELS)
    assert make_data.qc_class("glass") == 0 and make_data.qc_class("adipose cell (tissue)") == 1
    assert make_data.qc_class("pen ink over tissue (tissue)") == 2 and make_data.qc_class("fold (tissue)") == 3
    assert make_data.qc_class("bubble rim over tissue (tissue)") == 4
    assert make_data.qc_class("dust over tissue (tissue)") == 5
    assert make_data.qc_class("lumen or tear (background)") == 0


def test_qc_scripts_run_end_to_end_at_a_tiny_size(tmp_path):
    """scripts/qc_model: make_data, train and report at 96 px, 2 + 1 slides, 2 steps (a smoke test)."""
    from conftest import load_script

    data, run, out = tmp_path / "data", tmp_path / "run", tmp_path / "out"
    assert load_script("scripts/qc_model/make_data.py").main(
        ["--out", str(data), "--size", "96", "--train", "2", "--val", "1"]) == 0
    assert load_script("scripts/qc_model/train.py").main(
        ["--data", str(data), "--out", str(run), "--steps", "2", "--val-every", "2"]) == 0
    assert load_script("scripts/qc_model/report.py").main(
        ["--run", str(run), "--data", str(data), "--out", str(out), "--example", "s95000"]) == 0
    report = json.loads((out / "qc-model.json").read_text())
    assert len(report["classes"]) == 6
