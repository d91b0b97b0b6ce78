#!/bin/bash
# One-channel predict outputs before and after the several-class writers, compared with cmp
# (results/qc-model/binary-unchanged.txt):
#   scripts/qc_model/binary_unchanged.sh WORK_DIR [BEFORE_COMMIT]   (default 19d088e)
# Run from the repository root with its virtual environment active.
set -e
D=$1; BEFORE=${2:-19d088e}; ROOT=$(pwd)
mkdir -p "$D/head"
git archive "$BEFORE" src | tar -x -C "$D/head"
OMP_NUM_THREADS=1 python - "$D" <<'PY'
import sys
from pathlib import Path

import tifffile
import torch

from gigaseg import UNet, preset, save_checkpoint
from gigaseg.synth import render_region

d = Path(sys.argv[1])
rgb, _ = render_region(7, 0, 0, 2400, 1700, width=2400, height=1700, mpp=1.0, profile="all")
tifffile.imwrite(d / "slide.tif", rgb, tile=(256, 256), photometric="rgb", compression="zlib",
                 resolution=(1e4, 1e4), resolutionunit="CENTIMETER", metadata=None)
torch.manual_seed(0)
save_checkpoint(d / "tiny.pt", UNet(preset("tiny")), mpp=2.0)
PY
echo "# $(date -u +%FT%TZ); before: git archive $BEFORE src; after: the working tree at $(git rev-parse --short HEAD)"
echo "# slide: gigaseg.synth.render_region(7, 0, 0, 2400, 1700, width=2400, height=1700, mpp=1.0, profile='all') as a tiled TIFF at 1 um/px"
echo "# models: the built-in model (no --model), and an untrained 'tiny' UNet (torch.manual_seed(0)) saved with mpp=2.0"
for v in before after; do
  if [ $v = before ]; then PP=$D/head/src; else PP=$ROOT/src; fi
  rm -rf "$D/$v-builtin" "$D/$v-tiny"
  echo "\$ PYTHONPATH=$PP python -m gigaseg predict slide.tif --out $v-builtin --no-progress"
  PYTHONPATH=$PP OMP_NUM_THREADS=1 python -m gigaseg predict "$D/slide.tif" --out "$D/$v-builtin" --no-progress 2>&1 | sed "s|$D/||g"
  echo "\$ PYTHONPATH=$PP python -m gigaseg predict slide.tif --model tiny.pt --out $v-tiny --no-progress"
  PYTHONPATH=$PP OMP_NUM_THREADS=1 python -m gigaseg predict "$D/slide.tif" --model "$D/tiny.pt" --out "$D/$v-tiny" --no-progress 2>&1 | sed "s|$D/||g"
done
for k in builtin tiny; do for f in slide.mask.tiff slide.geojson slide.overlay.png; do
  echo "\$ cmp before-$k/$f after-$k/$f"
  cmp "$D/before-$k/$f" "$D/after-$k/$f" && echo "identical ($(stat -c %s "$D/after-$k/$f") bytes)"
done; done
