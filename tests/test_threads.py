"""NOTE [Numba threads]: numba's pool follows OMP_NUM_THREADS (torchrun sets it to 1 per process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = "import gigaseg, numba; print(numba.config.NUMBA_NUM_THREADS)"


@pytest.mark.parametrize("env,expected", [
    ({"OMP_NUM_THREADS": "1"}, "1"),
    ({"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}, "2"),  # an explicit setting wins
    ({"OMP_NUM_THREADS": "x"}, None),  # not a number: numba's own default
])
def test_numba_pool_follows_omp_num_threads(env, expected):
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", CODE], env={**base, **env}, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    default = subprocess.run([sys.executable, "-c", "import numba; print(numba.config.NUMBA_NUM_THREADS)"],
                             env=base, capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    assert out == (expected or default)
