"""The tiled forward pass: ``iter_predict`` and ``tiled_predict``."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast, overload

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..glass import balance_for
from .arrays import ImageLike, OutSink
from .locality import geometry_of
from .orient import check_orientations, oriented_views
from .planner import _prepare
from .reading import _HEAP, _check_read_workers, _progress, _read_ahead
from .tiles import _as_input, _read_crop, _Tile, _tile_list, _tiles, input_channels_last, input_multiple

#: The ``order`` choices of :func:`iter_predict`.
ORDERS = ("shape", "rows")
#: The ``output`` choices of :func:`iter_predict`.
OUTPUTS = ("probabilities", "logits", "uint8")

_Out = TypeVar("_Out", bound=OutSink)


def _core_logits(model: nn.Module, crop: np.ndarray, core: tuple[slice, slice], device: torch.device,
                 dtype: torch.dtype, fast: bool) -> torch.Tensor:
    """Logits of the uint8 ``crop`` over its ``core`` (no gradients): ``model(crop / 255)`` cropped,
    or the compiled CPU kernels' equal result when ``fast`` (see ``gigaseg._cpu_kernels``): (h, w)
    for a model of one output channel, (C, h, w) for one of C >= 2."""
    if fast:
        from ._cpu_kernels import predict_core

        z = predict_core(model, crop, *core)
        if z is not None:
            return z
    config = geometry_of(model)  # a UNet's config, or the geometry of a model of the user's
    logits: torch.Tensor = model(_as_input(crop, device, dtype, input_multiple(config), input_channels_last(config)))
    if config.out_channels > 1:
        return logits[0][:, core[0], core[1]]
    return logits[0, 0][core]


def _from_logits(z: torch.Tensor, *, probabilities: bool = True, uint8: bool = False) -> np.ndarray:
    """Logits -> numpy logits, probabilities, or ``round(255 p)`` as uint8 (float32 at least:
    a bfloat16 or float16 model's logits are widened before the sigmoid). (h, w) logits give
    (h, w) and the sigmoid; (C, h, w) logits of C classes give (h, w, C) and the softmax."""
    if z.dtype not in (torch.float32, torch.float64):
        z = z.float()
    if z.ndim == 3:  # several classes: channels last, softmax over them
        z = z.permute(1, 2, 0)
        p = torch.softmax(z, dim=-1) if probabilities else z.contiguous()
    else:
        p = torch.sigmoid(z) if probabilities else z
    if uint8:
        p = (p if probabilities else p.clone()).mul_(255).round_().to(torch.uint8)  # in place: 2x faster
    return p.cpu().numpy()


def _kernel_image(image: ImageLike) -> bool:
    """Whether the compiled CPU kernels read ``image``: (H, W, 3) uint8 (NOTE [Input scaling])."""
    return np.dtype(image.dtype) == np.uint8 and int(image.shape[2]) == 3


def _fast_cpu(model: nn.Module, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether inference of ``model`` runs on the compiled CPU kernels (``gigaseg._cpu_kernels``)."""
    from ._cpu_kernels import eligible

    return eligible(model, dtype, device)


@dataclass(frozen=True)
class TileBox:
    """An output tile (a tile's core) in image pixels: rows ``[y0, y1)``, columns ``[x0, x1)``."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, columns)`` slices of the image or output, e.g. ``out[box.slices] = block``."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)`` of the tile's block."""
        return self.y1 - self.y0, self.x1 - self.x0


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{name} {value!r} is not valid: use one of {', '.join(repr(c) for c in choices)}")
    return value


# NOTE [Tile order]
# The tiles are those of the engine's plan for the whole image: cores on the stride grid, crops
# with the engine's halos. Each core is computed from its own crop alone, so the order in which
# the tiles are visited changes nothing in the result, only memory and when a part of the output
# is complete. "shape" groups the tiles by crop shape (row-major within a shape), so that
# consecutive tiles allocate alike and reuse the heap (NOTE [Heap reuse]): best when the whole
# output is kept (``tiled_predict``). "rows" visits them row by row, left to right, so that a
# row of tiles is complete, and can be written and dropped, as soon as its last tile is yielded
# (``gigaseg.predict.predict_slide`` appends each row of a slide's mask to a file). The crops are
# read ahead in the same order the model takes them (NOTE [Read ahead]).
class TilePredictions:
    """The tiles of one prediction, as :func:`iter_predict` returns them.

    An iterator of ``(box, block)``: ``box`` a :class:`TileBox` (the tile's core, image pixels),
    ``block`` the (h, w) numpy result over it (``box.shape``), or (h, w, C) for a model of C >= 2
    output channels. Iterating reads crops ahead in background threads; ``close()`` (or leaving a
    ``with`` block, or the end of the tiles) stops and joins them.

    Attributes:
        shape: ``(H, W)`` of the image and of the whole output.
        tile: ``(h, w)`` of the planned core tile (edge tiles are smaller).
        n_tiles: the number of tiles.
        classes: the model's output channels C (a block is (h, w, C) when C >= 2).
        order, output: as given to :func:`iter_predict`.
        timings: seconds so far: ``read_wait_s`` (waiting for a crop to be read),
            ``model_s`` (the model and turning its logits into ``output``).
    """

    def __init__(self, model: nn.Module, image: ImageLike, tiles: list[_Tile], *, shape: tuple[int, int],
                 tile: tuple[int, int], order: str, output: str, device: torch.device, dtype: torch.dtype,
                 read_workers: int, read_ahead: int, progress: bool) -> None:
        self.shape = shape
        self.tile = tile
        self.n_tiles = len(tiles)
        self.order = order
        self.output = output
        self.timings = {"read_wait_s": 0.0, "model_s": 0.0}
        self._dtype = dtype
        self.classes = geometry_of(model).out_channels
        self._gen = self._run(model, image, tiles, device, dtype, read_workers, read_ahead, progress)

    def _run(self, model: nn.Module, image: ImageLike, tiles: list[_Tile], device: torch.device, dtype: torch.dtype,
             workers: int, ahead: int, progress: bool) -> Generator[tuple[TileBox, np.ndarray], None, None]:
        fast = _fast_cpu(model, dtype, device) and _kernel_image(image)
        probabilities, uint8 = self.output != "logits", self.output == "uint8"
        read: Callable[[_Tile], np.ndarray] = lambda t: _read_crop(image, t)  # noqa: E731
        ahead_reads = _read_ahead(tiles, read, workers, ahead)
        reads = _progress(ahead_reads, len(tiles), progress, "predict")
        timings = self.timings
        try:
            while True:
                t0 = time.perf_counter()
                item = next(reads, None)
                t1 = time.perf_counter()
                timings["read_wait_s"] += t1 - t0
                if item is None:
                    return
                t, crop = item
                del item  # the crop is freed as soon as the model is done with it
                _HEAP(t)
                with torch.no_grad():
                    z = _core_logits(model, crop, t.core_in_crop, device, dtype, fast)
                    del crop
                    block = _from_logits(z, probabilities=probabilities, uint8=uint8)
                del z
                timings["model_s"] += time.perf_counter() - t1
                yield TileBox(t.y0, t.y1, t.x0, t.x1), block
                del block
        finally:  # the end, an error or an abandoned iterator: stop the bar and the readers
            if reads is not ahead_reads:
                reads.close()
            ahead_reads.close()

    def __iter__(self) -> TilePredictions:
        return self

    def __next__(self) -> tuple[TileBox, np.ndarray]:
        return next(self._gen)

    def __len__(self) -> int:
        return self.n_tiles

    def close(self) -> None:
        """Stop: cancel the reads not yet started and wait for those running."""
        self._gen.close()

    def __enter__(self) -> TilePredictions:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"TilePredictions(shape={self.shape}, tile={self.tile}, n_tiles={self.n_tiles}, "
                f"order={self.order!r}, output={self.output!r})")


def iter_predict(
    model: nn.Module,
    image: ImageLike,
    *,
    order: str = "shape",
    output: str = "probabilities",
    memory_budget: int | str | None = None,
    tile: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
    read_workers: int | None = None,
    read_ahead: int | None = None,
    progress: bool = False,
) -> TilePredictions:
    """The model's output over a whole image, one tile at a time.

    The image is tiled by the engine's plan (cores on the model's stride grid, crops with
    halos, NOTE [Exact tiling]); each tile's block equals the same part of
    ``model(image / 255)`` on the whole image, up to float rounding. Crops are read ahead of
    the model in background threads; on the CPU a float32 model runs on gigaseg's compiled
    kernels where numba is installed (as in :func:`tiled_predict`).

    Args:
        model: a ``gigaseg.UNet`` or any ``nn.Module`` of local layers (``check_local``),
            moved to ``device``.
        image: (H, W, C) uint8, uint16 or float32 array-like (numpy array, ``np.memmap``, zarr array,
            ``gigaseg.slides.SlideArray``), sliced ``image[y0:y1, x0:x1]`` once per tile.
        order: "shape" (tiles grouped by crop shape: the fastest) or "rows" (row by row, left
            to right: a row of tiles is complete when its last tile is yielded); NOTE [Tile order].
        output: "probabilities" (``sigmoid`` of the logits, float32, float64 for a float64
            model; for a model of C >= 2 output channels the ``softmax`` over them), "logits"
            (same dtypes) or "uint8" (``round(255 * p)``).
        memory_budget, tile, device: as for ``tiled_backward``.
        read_workers: threads reading crops (default 1 on the CPU, one per spare core on an
            accelerator); the results do not depend on it.
        read_ahead: crops read ahead of the model (default ``read_workers``; more smooths
            uneven reads, at one crop of host memory each).
        progress: a tqdm bar on stderr.

    Returns:
        A :class:`TilePredictions`: an iterator of ``(box, block)``, ``box`` a :class:`TileBox`
        (image pixels), ``block`` the (h, w) numpy output over it ((h, w, C) for C >= 2 output
        channels); it also tells the plan's ``tile``, ``n_tiles`` and ``timings``. The arguments
        are checked and the tiles planned here; reading starts at the first tile.

    Raises:
        ConfigError: a bad ``order``, ``output``, ``read_workers`` or ``read_ahead``.
        InputError, PlanError, UnsupportedModelError: as for ``tiled_backward``.

    Example::

        out = np.lib.format.open_memmap("p.npy", "w+", np.uint8, image.shape[:2])
        for box, block in iter_predict(model, image, order="rows", output="uint8"):
            out[box.slices] = block
    """
    _check_choice("order", order, ORDERS)
    _check_choice("output", output, OUTPUTS)
    config, height, width, dev, dtype, th, tw = _prepare(model, image, tile, memory_budget, device, "predict")
    image = balance_for(model, image)  # NOTE [Glass balance]: a model that declares it reads its image balanced
    workers = _check_read_workers(read_workers, dev)
    if read_ahead is None:
        ahead = workers
    elif isinstance(read_ahead, bool) or not isinstance(read_ahead, (int, np.integer)) or read_ahead < 1:
        raise ConfigError(f"read_ahead must be a positive integer, got {read_ahead!r}")
    else:
        ahead = max(workers, int(read_ahead))
    if order == "shape":
        tiles = _tile_list(height, width, th, tw, config)
    else:
        tiles = list(_tiles(height, width, th, tw, config))
    return TilePredictions(model, image, tiles, shape=(height, width), tile=(th, tw), order=order, output=output,
                           device=dev, dtype=dtype, read_workers=workers, read_ahead=ahead, progress=progress)


@overload
def tiled_predict(
    model: nn.Module, image: ImageLike, *, out: None = None, memory_budget: int | str | None = None,
    tile: int | Sequence[int] | None = None, device: str | torch.device | None = None, progress: bool = False,
    logits: bool = False, read_workers: int | None = None, orientations: int = 1,
) -> np.ndarray: ...
@overload
def tiled_predict(
    model: nn.Module, image: ImageLike, *, out: _Out, memory_budget: int | str | None = None,
    tile: int | Sequence[int] | None = None, device: str | torch.device | None = None, progress: bool = False,
    logits: bool = False, read_workers: int | None = None, orientations: int = 1,
) -> _Out: ...
def tiled_predict(
    model: nn.Module,
    image: ImageLike,
    *,
    out: OutSink | None = None,
    memory_budget: int | str | None = None,
    tile: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    logits: bool = False,
    read_workers: int | None = None,
    orientations: int = 1,
) -> np.ndarray | OutSink:
    """Per-pixel tissue probabilities ``sigmoid(model(image / 255))``, computed tile by tile; for a
    model of C >= 2 output channels, the class probabilities ``softmax(model(image / 255))``.

    Args:
        model: a ``gigaseg.UNet`` or any ``nn.Module`` of local layers (``check_local``).
        image: (H, W, C) uint8, uint16 or float32 array-like, read tile by tile (``image / 255`` for
            uint8: NOTE [Input scaling] in ``tiles``).
        out: optional (H, W) array-like ((H, W, C) for C classes) to write into (e.g.
            ``np.memmap`` or zarr): float arrays get probabilities, uint8 arrays get
            ``round(255 * p)``. Default: a new numpy array, float64 for a float64 model, else
            float32.
        memory_budget, tile, device, progress, read_workers: as for ``tiled_backward``.
        logits: return the logits ``model(image / 255)`` instead of probabilities.
        orientations: 1, 2, 4 or 8: the mean of the model's outputs over that many orientations
            of the image (test-time augmentation, NOTE [Orientations] in ``orient``; probabilities
            are averaged, or the logits with ``logits=True``), at that many times the cost.

    A UNet with ``glass_white`` reads the image glass-balanced, with gains computed once from the
    whole image (``gigaseg.glass``, NOTE [Glass balance]).
    A bfloat16 or float16 model runs in that dtype; its logits are turned into float32
    before the sigmoid. On the CPU a float32 model runs on gigaseg's compiled kernels where
    numba is installed (``gigaseg._cpu_kernels``: equal to the model to float32 rounding,
    ~1.5x faster); ``GIGASEG_NO_CPU_KERNELS=1`` keeps PyTorch's. The tiles are those of
    :func:`iter_predict` in its "shape" order.

    Returns:
        ``out`` (or the new array), (H, W); (H, W, C) for a model of C >= 2 output channels
        (class c's probability or logit in channel c).
    """
    orientations = check_orientations(orientations)
    if orientations > 1:
        return _oriented_predict(model, image, orientations, out=out, logits=logits, memory_budget=memory_budget,
                                 tile=tile, device=device, progress=progress, read_workers=read_workers)
    if getattr(model, "tiled_slide_head", False):  # a SlideClassifier, one (C,) vector: NOTE [Slide heads]
        if out is not None:
            raise InputError("a SlideClassifier gives one (C,) vector per image; `out` is for per-pixel models")
        head: Any = model
        return cast(np.ndarray, head._tiled_predict(image, memory_budget=memory_budget, tile=tile, device=device,
                                                    progress=progress, read_workers=read_workers, logits=logits))
    wants_uint8 = out is not None and getattr(out, "dtype", None) == np.uint8
    output = "logits" if logits else ("uint8" if wants_uint8 else "probabilities")
    tiles = iter_predict(model, image, order="shape", output=output, memory_budget=memory_budget, tile=tile,
                         device=device, read_workers=read_workers, progress=progress)
    height, width = tiles.shape
    shape: tuple[int, ...] = (height, width) if tiles.classes == 1 else (height, width, tiles.classes)
    if out is None:
        out = np.empty(shape, dtype=np.float64 if tiles._dtype == torch.float64 else np.float32)
    _check_out(out, shape, logits)
    with tiles:
        for box, block in tiles:
            out[box.y0:box.y1, box.x0:box.x1] = block
    return out


def _oriented_predict(model: nn.Module, image: ImageLike, n: int, *, out: OutSink | None, logits: bool,
                      **kw: Any) -> np.ndarray | OutSink:
    """``tiled_predict`` averaged over the first ``n`` of ``ORIENTATIONS`` (NOTE [Orientations])."""
    if getattr(model, "tiled_slide_head", False):
        raise ConfigError("a SlideClassifier gives one vector per image: `orientations` is for per-pixel models")
    total: np.ndarray | None = None
    for view, seen in oriented_views(balance_for(model, image), n):  # the balance estimated once
        block = view.to_image(tiled_predict(model, seen, logits=logits, **kw))
        if total is None:
            if out is not None:  # refused after the first pass, not the last: its shape holds the class count
                _check_out(out, block.shape, logits)
            total = np.array(block, dtype=np.float64)
        else:
            total += block
    assert total is not None
    mean = (total / n).astype(block.dtype)
    if out is None:
        return mean
    uint8 = np.dtype(out.dtype) == np.uint8
    out[0:mean.shape[0], 0:mean.shape[1]] = np.rint(255 * mean).astype(np.uint8) if uint8 else mean
    return out


def _check_out(out: OutSink, shape: tuple[int, ...], logits: bool) -> None:
    """InputError unless ``out`` is of ``shape`` ((H, W) or (H, W, C)) and a float array, or uint8 for probabilities."""
    if tuple(getattr(out, "shape", ())) != shape:
        names = "(H, W)" if len(shape) == 2 else "(H, W, C)"
        raise InputError(f"out must have shape {names} = {shape}, got {getattr(out, 'shape', None)}")
    out_dtype = np.dtype(out.dtype)
    if not (out_dtype.kind == "f" or (out_dtype == np.uint8 and not logits)):
        raise InputError(
            f"out must be a float array{'' if logits else ' or a uint8 array (probabilities * 255)'}, "
            f"got dtype {out_dtype}"
        )
