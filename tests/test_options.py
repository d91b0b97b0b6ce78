"""gigaseg.options: every vocabulary and shared default defined once, importable without torch;
the command takes its choices and defaults from it; a wrong value says what was meant."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from gigaseg import ConfigError, options

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_options_import_neither_torch_nor_numpy():
    code = (
        "import sys\n"
        "import gigaseg.options\n"
        "from gigaseg import TrainConfig, UNetConfig, PRESETS, preset\n"
        "TrainConfig(data='d', out='o', preset=preset('tiny')).check()\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    assert _run(code) == "[]"


def test_the_command_line_parser_does_not_import_torch():
    code = "import sys\nfrom gigaseg.cli import build_parser\nbuild_parser()\nprint('torch' in sys.modules)\n"
    assert _run(code) == "False"


def test_did_you_mean():
    assert options.closest("dic", options.LOSSES) == "dice"
    assert options.closest("zzz", options.LOSSES) is None
    with pytest.raises(ConfigError, match=r"^unknown loss 'dic'; did you mean 'dice'\? valid: bce, dice, bce\+dice$"):
        options.check_choice("loss", "dic", options.LOSSES)
    with pytest.raises(ConfigError, match=r"^unknown schedule 'zzz'; valid: cosine, step, constant$"):
        options.check_choice("schedule", "zzz", options.SCHEDULES)
    assert options.check_choice("jitter", "rgb", options.JITTERS) == "rgb"
    with pytest.raises(ConfigError, match=r"unknown demo options 'stpes' \(did you mean 'steps'\?\), 'x'; valid:"):
        options.check_keys("demo options", {"stpes": 1, "x": 2}, ["steps", "lr"])
    with pytest.raises(ConfigError, match="activation 'rleu' is unknown; did you mean 'relu'"):
        options.UNetConfig(activation="rleu")


def test_each_vocabulary_is_defined_once():
    """The library's public names for the vocabularies are gigaseg.options' objects."""
    from gigaseg import demo, losses, model, training

    assert losses.LOSSES is options.LOSSES and training.LOSSES is options.LOSSES
    assert training.SCHEDULES is options.SCHEDULES and training.TrainConfig is options.TrainConfig
    assert training.RESUME_CHANGEABLE is options.RESUME_CHANGEABLE
    assert demo.SCALES is options.DEMO_SCALES
    assert model.UNetConfig is options.UNetConfig and model.PRESETS is options.PRESETS
    assert options.PRESET_NAMES == tuple(options.PRESETS)
    for name in options.LOSSES:
        assert callable(losses.loss_fn(name))


# Modules outside this change still spell their vocabulary out; until they import it from
# gigaseg.options, it must stay equal to options'.
@pytest.mark.parametrize("module, name, vocabulary", [
    ("gigaseg.dataset", "JITTERS", "JITTERS"),
    ("gigaseg.predict", "PRECISIONS", "PRECISIONS"),
    ("gigaseg.synth", "HOLE_CONVENTIONS", "HOLE_CONVENTIONS"),
    ("gigaseg.prepare", "IGNORE_MODES", "IGNORE_MODES"),
    ("gigaseg.store", "FORMATS", "STORE_FORMATS"),
    ("gigaseg.store", "SPLITS", "SPLITS"),
    ("gigaseg.baseline", "BASELINE_METHODS", "BASELINE_METHODS"),
    ("gigaseg.slides", "BACKENDS", "SLIDE_BACKENDS"),
    ("gigaseg.metrics", "METRICS", "METRICS"),
])
def test_library_vocabularies_equal_the_options(module, name, vocabulary):
    assert tuple(getattr(importlib.import_module(module), name)) == getattr(options, vocabulary)


def _parsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


_VOCABULARIES = {name: getattr(options, name) for name in options.__all__
                 if isinstance(getattr(options, name), tuple) and name.isupper() and name != "RESUME_CHANGEABLE"}


def test_every_choice_of_the_command_is_an_options_vocabulary():
    from gigaseg.cli import build_parser

    seen = set()
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.choices is None or isinstance(action, argparse._SubParsersAction):
                continue
            where = " ".join(path) + " " + max(action.option_strings, key=len)
            assert any(action.choices is v for v in _VOCABULARIES.values()), f"{where} spells its choices out"
            if action.default is not argparse.SUPPRESS and action.default is not None:
                assert action.default in action.choices, where
            seen.add(id(action.choices))
    assert len(seen) >= 10


def test_shared_defaults_are_the_librarys():
    """The command's defaults come from gigaseg.options; the library's signatures agree with them."""
    from gigaseg.baseline import baseline_slide
    from gigaseg.demo import run_demo
    from gigaseg.metrics import evaluate_pairs
    from gigaseg.predict import predict_slide
    from gigaseg.prepare import prepare_region, prepare_synthetic
    from gigaseg.synth import write_slide

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    o = options
    assert default(predict_slide, "threshold") == o.DEFAULT_THRESHOLD == default(evaluate_pairs, "threshold")
    assert default(predict_slide, "precision") == o.DEFAULT_PRECISION
    assert default(baseline_slide, "method") == o.DEFAULT_BASELINE_METHOD
    assert default(baseline_slide, "working_mpp") == o.DEFAULT_WORKING_MPP
    assert default(write_slide, "quality") == o.DEFAULT_JPEG_QUALITY
    assert default(write_slide, "tile") == o.DEFAULT_TIFF_TILE
    assert default(write_slide, "mpp") == o.DEFAULT_SYNTH_MPP == default(prepare_synthetic, "mpp")
    assert default(write_slide, "holes") == o.DEFAULT_HOLES == default(prepare_synthetic, "holes")
    assert default(prepare_synthetic, "seed") == o.DEFAULT_SEED
    assert default(prepare_synthetic, "format") == o.DEFAULT_STORE_FORMAT == default(prepare_region, "format")
    assert default(prepare_region, "split") == o.DEFAULT_SPLIT and default(prepare_region, "ignore") == o.DEFAULT_IGNORE
    assert default(run_demo, "out") == o.DEFAULT_DEMO_OUT and default(run_demo, "scale") == o.DEFAULT_DEMO_SCALE
    assert default(run_demo, "device") == o.DEFAULT_DEVICE == o.TrainConfig().device


def test_one_version():
    import gigaseg
    from gigaseg._version import __version__

    assert gigaseg.__version__ == __version__ == importlib.metadata.version("gigaseg")
    proc = subprocess.run([sys.executable, "-m", "gigaseg", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"gigaseg {__version__}"
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'attr = "gigaseg._version.__version__"' in text
    assert f'"{__version__}"' not in text  # the version is written once, in gigaseg/_version.py
