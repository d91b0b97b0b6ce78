"""One tiled gradient computed by several processes together (``torch.distributed``).

``tiled_backward(..., group=G)`` splits the plan's tiles between the ranks of the process group
``G`` by cost (``split_by_cost``), exchanges the soft Dice's sums between its two passes and sums
the ranks' gradients at the end: every rank then holds the whole image's gradient. With
``grad_group`` (several groups, one image each: batches of images) the gradients are summed over
all of them. ``_Ranks`` is the engine's side of that exchange (NOTE [Distributed step]).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError, DistributedError
from . import watch
from .tiles import _Tile

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["DistributedError", "split_by_cost"]  # DistributedError lives in gigaseg.errors

# NOTE [Distributed step]
# The ranks of ``group`` compute one image's gradient together. Everything before the tiles
# (checks, plan, tile list) is done by every rank alike; then each rank takes a share of the
# tiles, balanced by cost (crop pixels, halo included: what a tile costs to read and run) with
# the greedy longest-processing-time rule on the tile list sorted by cost (ties by position),
# identical on every rank because the tile list is. A rank's share keeps the tile list's order
# (NOTE [Heap reuse]). Pass 1 runs on the share and the three Dice sums and the BCE sum are
# summed over ``group`` (float64) before pass 2, so every rank backpropagates with the global
# A and B (NOTE [Two-pass Dice]); pass 2 runs on the share and the ranks' gradient sums are
# summed over ``grad_group`` (one flat tensor of the model's dtype) before anything is added to
# ``.grad``. The result is the single process's up to summation order: the tiles partition the
# output whoever computes them, and sums commute. A rank left without tiles (more ranks than
# tiles) adds zeros.
#
# ``grad_group`` (default ``group``) is a group that holds ``group``: with K groups computing K
# images, each rank's partial sum enters the one all-reduce over ``grad_group``, so ``.grad``
# gets the sum of the K images' gradients (a caller divides by K for their mean) for the cost of
# one all-reduce. The loss returned is ``group``'s image's.
#
# Collectives are SUM all-reduces (``ReduceOp.AVG`` is NCCL's only). Every scalar exchange is one
# float64 vector of ``_SLOTS`` entries: [ranks that failed, a 60-bit hash of what the rank was
# given (3 chunks of 20 bits) and the chunks' squares, payload]. A model of C >= 2 classes has a
# longer payload in exchange 2 (3C sums, the CE sum, N): once exchange 1 has shown that every
# rank of ``group`` has the same model, each widens its exchanges over ``group`` to fit it
# (``widen``), so that a rank that fails later joins the others' exchange with a vector of the same
# length; those over ``grad_group`` keep ``_SLOTS``. The exchanges, in order:
#   1. over ``group``: the inputs checked and planned (no payload);
#   2. over ``group``, with a Dice term: pass 1 done (I, P, Y, BCE, N; for C classes I_c, P_c,
#      Y_c for each, CE, N);
#   3. over ``grad_group``: pass 2 done (the BCE sum without Dice);
#   4. over ``grad_group``, if no rank failed: the gradients.
# A rank whose own work fails (a bad mask value in one of its tiles, a full disk) still joins
# the exchange that the others wait in, with its count set, and every rank then raises (the
# failing one its own error, the others DistributedError) instead of waiting for the timeout;
# the ranks of a ``group`` inside a larger ``grad_group`` also join exchange 3, so that the other
# groups learn of it. A rank compares the hash sums with its own: they match on every rank
# exactly when all hashes are equal (a mean and a mean square that equal one value leave no
# variance; exact in float64 for fewer than 2**13 ranks), so different image sizes, tiles,
# losses or models are refused alike on every rank. A rank that dies, or hangs, is detected by
# the collectives of ``watch`` when a ``RankWatch`` is started (training and prediction under
# torchrun start one): the others stop within its timeout, naming it (NOTE [Rank faults]);
# without one, they wait until the process group's timeout.
_SLOTS = 12
_HASH_CHUNKS = 3


def _tile_costs(tiles: Sequence[_Tile]) -> list[int]:
    """Each tile's cost: its crop's pixels, halo included."""
    return [(t.cy1 - t.cy0) * (t.cx1 - t.cx0) for t in tiles]


def split_by_cost(costs: Sequence[int], parts: int) -> list[list[int]]:
    """The indices of ``costs`` split into ``parts`` lists of about equal total cost.

    Greedy longest-processing-time: the items by decreasing cost (ties by index) each go to the
    part with the least total so far (ties to the lowest part). Deterministic, so every rank
    computes the same split; each part's indices are in increasing order.
    """
    if parts < 1:
        raise ConfigError(f"cannot split into {parts} parts; give at least 1")
    loads = [(0, part) for part in range(parts)]
    out: list[list[int]] = [[] for _ in range(parts)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, part = heapq.heappop(loads)
        out[part].append(i)
        heapq.heappush(loads, (load + costs[i], part))
    return [sorted(part) for part in out]


def _hash_chunks(signature: object) -> list[float]:
    digest = int.from_bytes(hashlib.blake2b(repr(signature).encode(), digest_size=8).digest(), "little")
    chunks = [float((digest >> (20 * i)) & 0xFFFFF) for i in range(_HASH_CHUNKS)]
    return chunks + [c * c for c in chunks]


class _Ranks:
    """The ranks sharing one ``tiled_backward`` call: their share of the tiles and the exchanges
    between them (NOTE [Distributed step])."""

    def __init__(self, group: ProcessGroup, grad_group: ProcessGroup | None) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigError("`group` was given but torch.distributed has no process group; call "
                              "torch.distributed.init_process_group first (torchrun sets up its environment)")
        self.group = group
        self.grad_group = group if grad_group is None else grad_group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        if self.rank < 0 or dist.get_rank(self.grad_group) < 0:
            raise ConfigError("this process is not a member of `group` (or of `grad_group`); "
                              "pass a group it belongs to")
        self.nested = self.grad_group is not group
        #: whether the exchange the other ranks wait in next is over ``grad_group`` (exchange 3)
        self.next_is_last = False
        #: the length of the exchanges over ``group`` (``widen``)
        self.slots = _SLOTS
        # where the exchanged tensors live: the current CUDA device under NCCL, else the CPU
        nccl = dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    def share(self, tiles: Sequence[_Tile]) -> list[_Tile]:
        """This rank's tiles, in the order of ``tiles``."""
        return [tiles[i] for i in split_by_cost(_tile_costs(tiles), self.size)[self.rank]]

    def widen(self, payload: int) -> None:
        """Make the exchanges over ``group`` from now on fit ``payload`` numbers: every rank of
        ``group`` calls it alike, after an exchange that showed they have the same model."""
        self.slots = max(_SLOTS, 1 + 2 * _HASH_CHUNKS + payload)

    def exchange(self, stage: str, signature: object, payload: Sequence[float], *,
                 last: bool = False) -> list[float]:
        """The sums over the ranks of ``payload`` (over ``grad_group`` when ``last``, else over
        ``group``). Raises, on every rank alike, when a rank failed (see ``fail``) or was given
        other work (``signature`` differs)."""
        import torch.distributed as dist

        group = self.grad_group if last else self.group
        sums = self._all_reduce([0.0, *_hash_chunks(signature), *payload], group, stage,
                                _SLOTS if last else self.slots)
        if sums[0] > 0:
            if self.nested and not last:
                self._all_reduce([1.0], self.grad_group, stage)  # the other groups learn of it in exchange 3
            raise DistributedError(
                f"{int(sums[0])} rank(s) failed while {stage}, so rank {self.rank} stops too; "
                "their own errors say why")
        n = dist.get_world_size(group)
        own = _hash_chunks(signature)
        if any(s != n * v for s, v in zip(sums[1:1 + len(own)], own)):
            if self.nested and not last:
                self._all_reduce([1.0], self.grad_group, stage)
            raise DistributedError(
                f"the ranks were given different work while {stage}: every rank of `group` must pass the same "
                "image size, mask size, tile, memory budget, loss and model (and every rank of `grad_group` the "
                "same model)")
        return sums[1 + len(own):1 + len(own) + len(payload)]

    def fail(self) -> None:
        """Join the exchange the other ranks wait in next (``next_is_last``), and exchange 3 too
        for the other groups of ``grad_group``, saying that this rank failed; the caller then
        raises its error."""
        if not self.next_is_last:
            self._all_reduce([1.0], self.group, "saying that a rank failed", self.slots)
        if self.next_is_last or self.nested:
            self._all_reduce([1.0], self.grad_group, "saying that a rank failed")

    def sum_grads(self, grads: Sequence[torch.Tensor]) -> None:
        """Sum ``grads`` over ``grad_group``, in place, in one all-reduce."""
        if not grads:
            return
        flat = torch.cat([g.reshape(-1).to(self.device) for g in grads])
        watch.all_reduce(flat, self.grad_group, what="summing the gradients")
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view(g.shape))
            offset += g.numel()

    def _all_reduce(self, values: Sequence[float], group: ProcessGroup, what: str,
                    slots: int = _SLOTS) -> list[float]:
        if len(values) > slots:
            raise ValueError(f"{len(values)} numbers do not fit an exchange of {slots}")  # a bug, not a user's error
        vector = torch.zeros(slots, dtype=torch.float64, device=self.device)
        vector[:len(values)] = torch.tensor(values, dtype=torch.float64)
        watch.all_reduce(vector, group, what=what)
        return [float(v) for v in vector.cpu()]
