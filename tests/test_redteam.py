"""Trust nothing that comes in: crafted store files, planted links, outputs that would replace
inputs, mask values that read two ways, and option values out of range. Every fixture is made
here, at test time; each test reproduces one failure a hostile tester found."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from gigaseg import ConfigError, InputError, StoreError
from gigaseg.cli import main
from gigaseg.metrics import confusion_counts, evaluate_pair, load_reference, scores

MPP = 2.0


def _tree(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Every file under ``root`` (links as their target's name) with a digest of its bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            p = Path(dirpath, name)
            if skip is not None and (p == skip or skip in p.parents):
                continue
            if p.is_symlink():
                out[str(p)] = "link:" + os.readlink(p)
            else:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _tiff(path: Path, rgb: np.ndarray) -> Path:
    import tifffile

    tifffile.imwrite(path, rgb, photometric="rgb", resolution=(1e4 / MPP, 1e4 / MPP), resolutionunit="CENTIMETER",
                     metadata=None)
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A small synthetic H&E slide at 2 um/px (RGB array) and its exact mask (0/1)."""
    from gigaseg.synth import render_region

    rgb, mask = render_region(3, 0, 0, 300, 200, width=300, height=200, mpp=MPP)
    return rgb, (mask > 0).astype(np.uint8)


def _err(capsys) -> str:
    return capsys.readouterr().err


# --- 2. names and paths from files ------------------------------------------------------------------


def _store_with_entry(tmp_path: Path, name) -> Path:
    from gigaseg.store import RegionStore

    store = RegionStore.create(tmp_path / "store")
    store.add_region("a", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))
    index = json.loads((tmp_path / "store" / "store.json").read_text())
    index["regions"].append({"name": name, "split": "train"})
    (tmp_path / "store" / "store.json").write_text(json.dumps(index))
    return tmp_path / "store"


def test_a_crafted_store_json_cannot_reach_outside_the_store(tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "region.json").write_text('{"name": "victim", "size": [8, 8], "note": "precious"}')
    before = _tree(tmp_path)
    store = _store_with_entry(tmp_path, "../victim")
    from gigaseg.store import RegionStore

    with pytest.raises(StoreError, match=r"store\.json lists a region named '\.\./victim'"):
        RegionStore(store)
    assert main(["store", str(store), "--set-split", "../victim", "val"]) == 2
    err = _err(capsys)
    assert "store.json" in err and "'../victim'" in err and "KeyError" not in err
    after = _tree(tmp_path)
    assert {k: v for k, v in after.items() if "store" not in Path(k).relative_to(tmp_path).parts} == before
    for k, bad in enumerate(("/etc", "", 7, None, "a/../../x", "store.json", "x\n", ".")):
        crafted = _store_with_entry(tmp_path / f"t{k}", bad)
        with pytest.raises(StoreError, match="store.json"):
            RegionStore(crafted)


def test_region_json_and_region_folders_are_checked(tmp_path):
    from gigaseg.store import RegionStore

    store = RegionStore.create(tmp_path / "s")
    store.add_region("a", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))
    meta_path = tmp_path / "s" / "a" / "region.json"
    good = json.loads(meta_path.read_text())
    for key, value, message in (("name", "../b", "names the region '../b'"), ("size", [8, -1], "size"),
                                ("format", "../../x", "format"), ("mpp", float("nan"), "mpp")):
        meta_path.write_text(json.dumps({**good, key: value}))
        with pytest.raises(StoreError, match=message):
            RegionStore(tmp_path / "s")["a"]
    meta_path.write_text(json.dumps(good))
    # a region folder that is a link out of the store is refused; set_split writes nothing there
    outside = tmp_path / "outside"
    (tmp_path / "s" / "a").rename(outside)
    (tmp_path / "s" / "a").symlink_to(outside, target_is_directory=True)
    before = _tree(outside)
    with pytest.raises(StoreError, match="link"):
        RegionStore(tmp_path / "s").set_split("a", "val")
    RegionStore(tmp_path / "s").remove("a")  # removes the link, never what it points to
    assert _tree(outside) == before and not (tmp_path / "s" / "a").exists()


def test_a_link_at_the_store_lock_is_not_followed(tmp_path):
    from gigaseg.store import RegionStore

    store = RegionStore.create(tmp_path / "s")
    (tmp_path / "precious").write_text("keep")
    (tmp_path / "s" / ".lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StoreError, match="link"):
        store.add_region("a", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))
    assert not (tmp_path / "elsewhere").exists()


# --- 2. temporary files ------------------------------------------------------------------------------


def test_evaluate_out_does_not_follow_a_planted_link(tmp_path, capsys):
    ref = np.zeros((20, 20), np.uint8)
    ref[5:15, 5:15] = 1
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "pred.npy", ref)
    ev = tmp_path / "ev"
    ev.mkdir()
    (tmp_path / "target.txt").write_text("precious")
    for name in (".evaluate.csv.tmp", ".evaluate.json.tmp", "evaluate.csv.tmp"):  # the old fixed names, and more
        (ev / name).symlink_to(tmp_path / "target.txt")
    before = _tree(tmp_path, skip=ev)
    assert main(["evaluate", str(tmp_path / "pred.npy"), "--reference", str(tmp_path / "ref.npy"),
                 "--out", str(ev)]) == 0
    assert (tmp_path / "target.txt").read_text() == "precious"
    assert _tree(tmp_path, skip=ev) == before  # no file outside --out changed
    assert not (ev / "evaluate.csv").is_symlink() and (ev / "evaluate.csv").read_text().startswith("prediction,")


def test_temporary_files_are_new_and_never_links(tmp_path):
    from gigaseg._atomic import atomic_write, open_exclusive

    (tmp_path / "target").write_text("precious")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target")
    with pytest.raises(FileExistsError):
        open_exclusive(link)
    with pytest.raises(FileExistsError):
        open_exclusive(tmp_path / "target")
    # an output that is a link is replaced by the new file, its target left alone
    with atomic_write(link) as f:
        f.write("new")
    assert (tmp_path / "target").read_text() == "precious" and not link.is_symlink()
    assert link.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]


def test_link_or_copy_replaces_a_planted_link_and_keeps_its_file(tmp_path, monkeypatch):
    """link_or_copy (kept checkpoints): the copy is whole, a link planted at its name is replaced
    and its target left alone, a later atomic rewrite of the source leaves the copy as it was,
    and without hard links it copies; no temporary file stays."""
    import errno

    from gigaseg._atomic import link_or_copy, write_text_atomic

    src, target = tmp_path / "src", tmp_path / "target"
    src.write_text("step 2")
    target.write_text("precious")
    for name, no_links in (("kept", False), ("copied", True)):
        if no_links:
            def cross_device(*args, **kwargs):
                raise OSError(errno.EXDEV, "Invalid cross-device link")

            monkeypatch.setattr("os.link", cross_device)
        dst = tmp_path / name
        dst.symlink_to(target)
        link_or_copy(src, dst)
        assert not dst.is_symlink() and dst.read_text() == "step 2" and target.read_text() == "precious"
    write_text_atomic(src, "step 4")
    assert (tmp_path / "kept").read_text() == "step 2" and (tmp_path / "copied").read_text() == "step 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copied", "kept", "src", "target"]


# --- 2. outputs never replace inputs -----------------------------------------------------------------


def test_slides_with_one_stem_are_refused_up_front(tmp_path, synth, capsys):
    rgb, _ = synth
    (tmp_path / "b1").mkdir()
    (tmp_path / "b2").mkdir()
    a, b = _tiff(tmp_path / "b1" / "s.tif", rgb), _tiff(tmp_path / "b2" / "s.tif", rgb)
    out = tmp_path / "out"
    for extra in ([], ["--overwrite"]):
        assert main(["baseline", str(a), str(b), "--out", str(out), "--no-progress", *extra]) == 2
        err = _err(capsys)
        assert str(a) in err and str(b) in err and "same output name 's'" in err and "--out" in err
        assert not out.exists()
        # predict: refused before the model is read (this checkpoint does not exist)
        assert main(["predict", str(a), str(b), "--model", str(tmp_path / "missing.pt"), "--out", str(out),
                     *extra]) == 2
        err = _err(capsys)
        assert str(a) in err and str(b) in err and "checkpoint" not in err.lower()
        assert not out.exists()


def test_a_slide_named_like_the_run_config_is_refused(tmp_path, synth, capsys):
    rgb, _ = synth
    out = tmp_path / "out"
    out.mkdir()
    names = ("baseline-config", "predict-config")
    for name in names:
        _tiff(out / f"{name}.tif", rgb)
    for command, name in zip(("baseline", "predict"), names):
        argv = [command, str(out / f"{name}.tif"), *(["--model", str(tmp_path / "missing.pt")] if command == "predict"
                                                      else []), "--out", str(out), "--no-progress"]
        assert main(argv) == 2
        err = _err(capsys)
        assert f"{out / name}.json" in err and "configuration file" in err
        assert sorted(p.name for p in out.iterdir()) == [f"{n}.tif" for n in names]


def test_overwrite_never_replaces_an_input(tmp_path, synth, capsys):
    rgb, mask = synth
    out = tmp_path / "out"
    out.mkdir()
    (out / "ann.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    (out / "notes.json").write_text('{"mine": 1}')
    before = _tree(tmp_path)
    for slide in ("ann.geojson", "notes.json"):
        assert main(["baseline", str(out / slide), "--out", str(out), "--overwrite", "--no-progress"]) == 2
        err = _err(capsys)
        assert f"the output {out / slide} would replace the input {out / slide}" in err
        assert main(["predict", str(out / slide), "--model", str(tmp_path / "missing.pt"), "--out", str(out),
                     "--overwrite"]) == 2
        assert "would replace the input" in _err(capsys)
    assert _tree(tmp_path) == before
    # a checkpoint is an input too
    tif = _tiff(tmp_path / "s.tif", rgb)
    assert main(["predict", str(tif), "--model", str(out / "s.json"), "--out", str(out)]) == 2
    assert f"{out / 's.json'}" in _err(capsys)
    # prepare: a mask that is where the run writes its configuration
    np.save(tmp_path / "m.npy", mask)
    (out / "prepare-config.json").write_bytes((tmp_path / "m.npy").read_bytes())
    assert main(["prepare", str(tmp_path / "s.tif"), "--masks", str(out / "prepare-config.json"), "--size", "8x8",
                 "--out", str(out), "--no-progress"]) == 2
    assert "would replace the input" in _err(capsys)
    # evaluate: a reference (a PNG under another name) where the report goes
    from PIL import Image

    Image.fromarray(mask).save(tmp_path / "ref.png")
    (out / "evaluate.csv").write_bytes((tmp_path / "ref.png").read_bytes())
    np.save(tmp_path / "pred.npy", mask)
    before = _tree(tmp_path)
    assert main(["evaluate", str(tmp_path / "pred.npy"), "--reference", str(out / "evaluate.csv"),
                 "--out", str(out)]) == 2
    assert "would replace the input" in _err(capsys)
    assert _tree(tmp_path) == before


def test_baseline_outputs_of_a_good_batch_are_written(tmp_path, synth, capsys):
    rgb, _ = synth
    (tmp_path / "in").mkdir()
    a, b = _tiff(tmp_path / "in" / "a.tif", rgb), _tiff(tmp_path / "in" / "b.tif", rgb)
    out = tmp_path / "out"
    assert main(["baseline", str(a), str(b), "--out", str(out), "--working-mpp", "4"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"a.json", "b.json", "a.mask.tiff", "b.mask.tiff", "baseline-config.json"} <= names


# --- 3. honest scores ------------------------------------------------------------------------------


def _pair(tmp_path: Path):
    ref = np.zeros((40, 60), np.uint8)
    ref[10:30, 10:40] = 1
    pred = np.zeros_like(ref)
    pred[12:32, 14:44] = 1
    want = scores(confusion_counts(pred, ref))["dice"]
    assert 0.7 < want < 0.9
    np.save(tmp_path / "pred.npy", pred)
    return ref, pred, want


def test_0_255_references_read_as_tissue_when_asked(tmp_path, capsys):
    from PIL import Image

    ref, _, want = _pair(tmp_path)
    Image.fromarray(ref * 255).save(tmp_path / "ref255.png")
    np.save(tmp_path / "ref255.npy", ref * 255)
    for name in ("ref255.png", "ref255.npy"):
        # ambiguous: refused by default, with both readings and the option named
        both = r"reads two ways.*`reference_values='0/255'`.*`reference_values='0/1/255'`"
        with pytest.raises(InputError, match=both):
            evaluate_pair(tmp_path / "pred.npy", tmp_path / name)
        assert main(["evaluate", str(tmp_path / "pred.npy"), "--reference", str(tmp_path / name)]) == 2
        err = _err(capsys)
        assert "--reference-values 0/255" in err and "--reference-values 0/1/255" in err
        r = evaluate_pair(tmp_path / "pred.npy", tmp_path / name, reference_values="0/255")
        assert r["dice"] == pytest.approx(want) and r["reference_values"] == "0/255"
        assert main(["evaluate", str(tmp_path / "pred.npy"), "--reference", str(tmp_path / name),
                     "--reference-values", "0/255"]) == 0
        assert f"{want:.4f}" in capsys.readouterr().out
    # the same reference as 0/1 gives the same score without any option
    np.save(tmp_path / "ref01.npy", ref)
    assert evaluate_pair(tmp_path / "pred.npy", tmp_path / "ref01.npy")["dice"] == pytest.approx(want)
    # 0/1/255: 255 is ignore; asking for 0/255 on a file with 1s is refused
    ref_ign = ref.copy()
    ref_ign[:, :5] = 255
    np.save(tmp_path / "ref_ign.npy", ref_ign)
    assert evaluate_pair(tmp_path / "pred.npy", tmp_path / "ref_ign.npy")["ignored"] == 5 * 40
    with pytest.raises(InputError, match="holds 1s"):
        load_reference(tmp_path / "ref_ign.npy", values="0/255")


def test_gigaseg_mask_tiffs_are_0_255_tissue(tmp_path, synth, capsys):
    import tifffile

    rgb, truth = synth
    slide = _tiff(tmp_path / "s.tif", rgb)
    out = tmp_path / "out"
    assert main(["baseline", str(slide), "--out", str(out), "--working-mpp", str(MPP)]) == 0
    capsys.readouterr()
    tiff = out / "s.mask.tiff"
    assert set(np.unique(tifffile.imread(tiff)).tolist()) == {0, 255}
    np.save(tmp_path / "truth.npy", truth)
    forward = evaluate_pair(tiff, tmp_path / "truth.npy")
    backward = evaluate_pair(tmp_path / "truth.npy", tiff)  # the mask TIFF as the reference, no option
    assert backward["reference_values"] == "0/255" and backward["ignored"] == 0
    assert backward["dice"] == pytest.approx(forward["dice"]) and 0.3 < forward["dice"] < 0.99
    itself = evaluate_pair(tiff, tiff)
    assert itself["dice"] == 1.0 and itself["tp"] > 0  # not "1.0 because everything is ignored"
    # a plain TIFF with the same values is not gigaseg's: ambiguous
    tifffile.imwrite(tmp_path / "plain.tif", tifffile.imread(tiff))
    with pytest.raises(InputError, match="reads two ways"):
        evaluate_pair(tiff, tmp_path / "plain.tif")


def test_values_that_no_rule_reads_are_refused(tmp_path):
    _pair(tmp_path)
    np.save(tmp_path / "grey.npy", np.arange(40 * 60, dtype=np.int64).reshape(40, 60) % 255)
    with pytest.raises(InputError, match=r"holds the values .* besides 0/1/255.*threshold it"):
        load_reference(tmp_path / "grey.npy")
    np.save(tmp_path / "float.npy", np.where(np.eye(40, 60) > 0, 0.7, 0.0))
    with pytest.raises(InputError, match=r"float64 values 0, 0\.7.*whole numbers"):
        load_reference(tmp_path / "float.npy")
    ref = np.zeros((40, 60), np.uint8)
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "pred_with_ignore.npy", np.tile(np.array([0, 1, 255], np.uint8), (40, 20)))
    with pytest.raises(InputError, match="no ignore value"):
        evaluate_pair(tmp_path / "pred_with_ignore.npy", tmp_path / "ref.npy")
    np.save(tmp_path / "pred_float.npy", np.full((40, 60), 255.0))
    with pytest.raises(InputError, match=r"probabilities in \[0, 1\]"):
        evaluate_pair(tmp_path / "pred_float.npy", tmp_path / "ref.npy")
    with pytest.raises(ConfigError, match="reference_values"):
        load_reference(tmp_path / "ref.npy", values="0-255")


# --- 3. every option value checked before any work -----------------------------------------------------


_BAD = [
    ("predict", "--threshold", "2"), ("predict", "--threshold", "nan"), ("predict", "--threshold", "0"),
    ("predict", "--memory-budget", "junk"), ("predict", "--memory-budget", "1MB"), ("predict", "--mpp", "nan"),
    ("predict", "--mpp", "0"), ("predict", "--mpp", "-1"), ("predict", "--model-mpp", "0"),
    ("predict", "--model-mpp", "inf"), ("predict", "--min-area", "nan"), ("predict", "--min-area", "-1"),
    ("predict", "--simplify", "nan"), ("predict", "--simplify", "inf"), ("predict", "--read-workers", "0"),
    ("baseline", "--working-mpp", "0"), ("baseline", "--working-mpp", "nan"), ("baseline", "--mpp", "nan"),
    ("baseline", "--min-area", "nan"), ("baseline", "--simplify", "-1"),
    ("evaluate", "--threshold", "2"), ("evaluate", "--threshold", "nan"), ("evaluate", "--threshold", "-0.1"),
    ("evaluate", "--reference-values", "0-255"),
    ("prepare", "--mpp", "nan"), ("prepare", "--slide-mpp", "0"), ("prepare", "--synthetic", "0"),
    ("prepare", "--val", "-1"), ("prepare", "--seed", "-1"), ("prepare", "--synthetic", "1.5"),
]


@pytest.mark.parametrize("command, flag, value", _BAD)
def test_a_bad_option_value_is_a_usage_error_before_any_work(tmp_path, capsys, command, flag, value):
    out = tmp_path / "out"
    missing = str(tmp_path / "missing.pt")  # a model that would fail to load: the usage error comes first
    slide = str(tmp_path / "s.tif")
    argv = {
        "predict": ["predict", slide, "--model", missing, "--out", str(out)],
        "baseline": ["baseline", slide, "--out", str(out)],
        "evaluate": ["evaluate", slide, "--reference", slide, "--out", str(out)],
        "prepare": ["prepare", "--size", "8x8", "--out", str(out)] + (["--synthetic", "1"] if flag != "--synthetic"
                                                                      else []),
    }[command] + [flag, value]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = _err(capsys)
    assert f"argument {flag}" in err and value in err
    assert "expected" in err or "invalid choice" in err  # the valid range, or the choices
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_train_option_values_are_checked_before_any_work(tmp_path, capsys):
    run = tmp_path / "run"
    for flag, value in (("--threshold", "nan"), ("--jitter-strength", "nan"), ("--memory-budget", "1MB"),
                        ("--lr", "inf"), ("--tile", "0")):
        assert main(["train", "--data", str(tmp_path / "missing-store"), "--out", str(run), flag, value]) == 2
        err = _err(capsys)
        assert f"{flag} {value}" in err and "`" not in err, err
        assert not run.exists()


def test_the_library_checks_the_same_ranges(tmp_path, synth):
    from gigaseg.baseline import baseline_slide, baseline_slides
    from gigaseg.metrics import evaluate_pairs
    from gigaseg.predict import predict_slide, predict_slides
    from gigaseg.prepare import prepare_synthetic
    from gigaseg.store import RegionStore

    rgb, _ = synth
    slide = _tiff(tmp_path / "s.tif", rgb)
    missing = tmp_path / "missing.pt"
    for kwargs, name in (({"threshold": 2.0}, "threshold"), ({"min_area": float("nan")}, "min_area"),
                         ({"simplify": float("nan")}, "simplify"), ({"model_mpp": 0.0}, "model_mpp"),
                         ({"mpp": float("inf")}, "mpp"), ({"memory_budget": "junk"}, "memory_budget"),
                         ({"read_workers": 0}, "read_workers")):
        with pytest.raises(ConfigError, match=f"`{name}="):
            predict_slides(missing, [slide], tmp_path / "out", **kwargs)
        with pytest.raises(ConfigError, match=name):  # read_workers: the engine's own check, before the model
            predict_slide(missing, slide, tmp_path / "out", **kwargs)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        predict_slides(missing, [slide], tmp_path / "out", thresold=0.5)
    for kwargs, name in (({"working_mpp": 0.0}, "working_mpp"), ({"min_area": float("nan")}, "min_area"),
                         ({"mpp": -1.0}, "mpp")):
        with pytest.raises(ConfigError, match=f"`{name}="):
            baseline_slide(slide, tmp_path / "out", **kwargs)
        with pytest.raises(ConfigError, match=f"`{name}="):
            baseline_slides([slide], tmp_path / "out", **kwargs)
    with pytest.raises(ConfigError, match="`threshold=nan`"):
        evaluate_pairs([slide], [slide], threshold=float("nan"))
    store = RegionStore.create(tmp_path / "store")
    for kwargs, name in (({"count": 0}, "count"), ({"count": 1, "mpp": float("nan")}, "mpp"),
                         ({"count": 1, "val": -1}, "val")):
        with pytest.raises(ConfigError, match=f"`{name}="):
            prepare_synthetic(store, size=(8, 8), **{"count": 1, **kwargs})
    assert not (tmp_path / "out").exists() and len(store) == 0
