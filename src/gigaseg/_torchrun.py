"""The processes of one training run under ``torchrun``: who they are, their groups, what they share.

``start_ranks`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), starts the
process group (gloo on the CPU, NCCL on CUDA) and splits the N ranks into K groups, one region
of the step each (NOTE [Distributed training]). Without torchrun (or with one process) it returns
None and training is the single process it always was. ``Ranks`` holds the rest: which region a
rank trains on, the mean loss of a step, the validation split, and ``agreed`` blocks that make
every rank raise when one fails.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .engine import split_by_cost
from .engine.watch import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, RankWatch, fault_timeout
from .engine.watch import all_reduce as _watched_all_reduce
from .engine.watch import broadcast as _watched_broadcast
from .errors import ConfigError, DistributedError

if TYPE_CHECKING:
    from torch import nn
    from torch.distributed import ProcessGroup

__all__ = ["Ranks", "start_ranks", "mean_grads", "World", "start_world", "TIMEOUT_ENV", "DEFAULT_TIMEOUT_S"]

# NOTE [Distributed training]
# Under torchrun, every rank runs the same training loop with the same options, seeds and data
# order, and so computes the same schedule, the same region permutation and, from equal
# gradients, the same weights (rank 0's are broadcast once at the start, so all start equal
# whatever their RNG). A step takes the next K = ``regions_per_step`` items of the region
# stream that one process would take one by one ((epoch, position) advance K at a time), so the
# checkpoint's data order means the same whatever N is, and ``--resume`` may use another N.
# The N ranks form K groups of N / K consecutive ranks; group j trains on item j: its ranks
# share the item's tiles (NOTE [Distributed step]) and the all-reduce of the gradients over all
# N ranks sums the K regions' gradients, which every rank divides by K (the mean: batch size
# K). The logged loss is the mean of the K regions' losses (each group's first rank adds its
# region's). A single process takes the K regions one after another, adding each one's gradient
# to ``.grad`` (tiled_backward accumulates), and divides by K: the same step up to summation
# order (a region's augmentation depends only on its index and epoch), in one region's memory.
# Rank 0 alone writes the run folder (config, logs, curves, checkpoints) and shows
# progress; validation regions are split between the ranks by size and their Dice counts
# summed, so the Dice is the single process's exactly (integer counts). Work that only some
# ranks do (rank 0's writing, a rank's share of the checks) runs in ``agreed`` blocks: one
# small all-reduce says whether any rank failed, so that all raise instead of the others
# waiting for the timeout.


def mean_grads(model: nn.Module, k: int) -> None:
    """Divide ``model``'s gradients, summed over ``k`` regions, by ``k`` (nothing to do for k = 1): the
    mean, whether the regions' gradients came from k groups of ranks or one process in turn."""
    if k > 1:
        for p in model.parameters():
            if p.grad is not None:
                p.grad.div_(k)


def _environment() -> tuple[int, int, int, int] | None:
    """(rank, world size, local rank, local world size) from torchrun's variables, or None."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError as exc:
        raise ConfigError(f"torchrun's environment is not understood ({exc}): RANK, WORLD_SIZE and LOCAL_RANK "
                          "must be integers") from None
    return rank, size, local, local_size


def _timeout() -> datetime.timedelta:
    """The process group's timeout: ``GIGASEG_DIST_TIMEOUT`` (NOTE [Rank faults])."""
    return datetime.timedelta(seconds=fault_timeout())


def start_ranks(regions_per_step: int, device: str) -> Ranks | None:
    """The ranks of this run, with the process group started; None for a single process.

    Under torchrun (``WORLD_SIZE`` > 1), or in a process group that the caller started, the
    ranks split into ``regions_per_step`` groups. On CUDA each rank takes the GPU of its
    ``LOCAL_RANK`` when a node runs several ranks.

    Raises:
        ConfigError: the number of processes is not a multiple of ``regions_per_step``, or a
            node has more ranks than GPUs.
    """
    import torch.distributed as dist

    env = _environment()
    initialized = dist.is_available() and dist.is_initialized()
    size = dist.get_world_size() if initialized else (env[1] if env else 1)
    if size == 1:
        return None  # one process takes the step's regions one after another (NOTE [Distributed training])
    if size % regions_per_step:
        raise ConfigError(
            f"`regions_per_step={regions_per_step}` needs a multiple of {regions_per_step} processes, one group "
            f"per region, but this run has {size}; start a multiple of {regions_per_step} processes with torchrun "
            "(docs/distributed.md), run one process (it takes the regions one after another), or change "
            "`regions_per_step`")
    if not dist.is_available():
        raise ConfigError("this PyTorch was built without torch.distributed; run one process, or install a "
                          "build with it")
    from .engine import resolve_device

    dev = resolve_device(device)
    local, local_size = (env[2], env[3]) if env else (0, 1)
    if dev.type == "cuda" and local_size > 1:
        if local >= torch.cuda.device_count():
            raise ConfigError(f"{local_size} ranks run on this node but it has {torch.cuda.device_count()} GPU(s); "
                              "start at most one process per GPU on each node")
        torch.cuda.set_device(local)
    if not initialized:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=_timeout())
    rank = dist.get_rank()
    per_group = size // regions_per_step
    # every rank creates every group, in the same order (torch.distributed's rule)
    groups = [dist.new_group(list(range(j * per_group, (j + 1) * per_group))) for j in range(regions_per_step)]
    world = dist.group.WORLD
    assert world is not None  # initialized above
    return Ranks(rank=rank, size=size, groups=regions_per_step, group=groups[rank // per_group], world=world,
                 owned=not initialized, watch=RankWatch().start())


@dataclass
class Ranks:
    """This process among the ranks of a run (NOTE [Distributed training]).

    Attributes:
        rank, size: this rank and the number of ranks (N).
        groups: K, the regions per step; ``size // groups`` ranks share each region.
        group: the process group of this rank's region; world: all ranks.
        owned: whether ``start_ranks`` started the process group (``close`` then ends it).
        watch: the ranks' beats and watched waits (NOTE [Rank faults] in gigaseg.engine.watch).
    """

    rank: int
    size: int
    groups: int
    group: ProcessGroup
    world: ProcessGroup
    owned: bool
    watch: RankWatch | None = field(default=None, repr=False)

    @property
    def group_index(self) -> int:
        """Which of the step's K regions this rank trains on."""
        return self.rank // (self.size // self.groups)

    @property
    def writer(self) -> bool:
        """Whether this rank writes the run folder and shows progress (rank 0)."""
        return self.rank == 0

    @property
    def leader(self) -> bool:
        """Whether this rank is the first of its group."""
        return self.rank % (self.size // self.groups) == 0

    def engine_groups(self) -> dict[str, ProcessGroup | None]:
        """``tiled_backward``'s ``group`` and ``grad_group`` for this rank."""
        return {"group": self.group, "grad_group": self.world if self.groups > 1 else None}

    def share(self, costs: Sequence[int]) -> list[int]:
        """This rank's indices of items of these costs, split between all ranks by cost."""
        return split_by_cost(costs, self.size)[self.rank]

    def mean_loss(self, loss: float) -> float:
        """The mean over the K regions of each group's ``loss`` (the same on every rank)."""
        if self.groups == 1:
            return loss  # one region: every rank has its loss already
        total = self._sum(torch.tensor([loss if self.leader else 0.0], dtype=torch.float64))
        return float(total[0]) / self.groups

    def mean_grads(self, model: nn.Module) -> None:
        """Divide the summed gradients of the K regions by K (nothing to do for K = 1)."""
        mean_grads(model, self.groups)

    def sum_counts(self, counts: Sequence[Sequence[int]]) -> list[list[int]]:
        """Integer counts (one row per item, zeros where another rank counts) summed over the ranks."""
        if not counts:
            return []
        total = self._sum(torch.tensor([list(row) for row in counts], dtype=torch.int64))
        return [[int(v) for v in row] for row in total.tolist()]

    def broadcast_parameters(self, model: nn.Module) -> None:
        """Give every rank rank 0's parameters (one broadcast of them all)."""
        with torch.no_grad():
            params = list(model.parameters())
            if not params:
                return
            flat = torch.cat([p.detach().reshape(-1).to(self._device()) for p in params])
            _watched_broadcast(flat, 0, self.world, what="giving every rank rank 0's weights")
            offset = 0
            for p in params:
                p.copy_(flat[offset:offset + p.numel()].view(p.shape).to(p.device))
                offset += p.numel()

    @contextlib.contextmanager
    def agreed(self, what: str) -> Iterator[None]:
        """Run a block that some ranks may fail in, then tell every rank whether one did: a
        rank whose block raised re-raises its error, the others raise DistributedError."""
        try:
            yield
        except DistributedError:
            raise  # every rank knows of it already
        except Exception:
            with contextlib.suppress(RuntimeError):  # the first error is the one to see
                self._flag(1, what)
            raise
        failed = self._flag(0, what)
        if failed:
            raise DistributedError(f"{failed} rank(s) failed while {what}, so rank {self.rank} stops too; "
                                   "their own errors say why")

    def announce_exit(self, exc: BaseException) -> None:
        """Tell the other ranks why this one leaves (Ctrl-C, SIGTERM, an error of its own), so
        that they stop at once instead of waiting for it until the timeout."""
        if self.watch is not None:
            self.watch.announce_exit(exc)

    def close(self) -> None:
        """Stop the watch, and end the process group if ``start_ranks`` started it."""
        import torch.distributed as dist

        if self.watch is not None:
            self.watch.close()
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()

    def _flag(self, value: int, what: str = "telling the others whether a rank failed") -> int:
        return int(self._sum(torch.tensor([value], dtype=torch.int64), what)[0])

    def _device(self) -> torch.device:
        import torch.distributed as dist

        if dist.get_backend(self.world) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _sum(self, tensor: torch.Tensor, what: str = "exchanging sums") -> torch.Tensor:
        buf = tensor.to(self._device())
        _watched_all_reduce(buf, self.world, what=what)
        return buf.cpu()


# --- processes that only share a list of work (prediction over many slides) ------------------------


@dataclass
class World:
    """This process among the ranks of a torchrun job that share a list of work (NOTE [Sharded
    prediction] in gigaseg.predict): no collective but the watched wait at the end.

    Attributes:
        rank, size: this rank and the number of ranks.
        watch: the ranks' beats, watched waits and messages (gigaseg.engine.watch).
        owned: whether ``start_world`` started the process group (``close`` then ends it).
    """

    rank: int
    size: int
    watch: RankWatch
    owned: bool

    def close(self) -> None:
        """Stop the watch, and end the process group if ``start_world`` started it."""
        import torch.distributed as dist

        self.watch.close()
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


def start_world(device: str | None = None) -> World | None:
    """The ranks of a torchrun job (``WORLD_SIZE`` > 1) or of a process group that the caller
    started, with a gloo process group and a RankWatch; None for a single process.

    With ``device`` "cuda" (or "auto" on a machine with CUDA) each rank takes the GPU of its
    ``LOCAL_RANK`` when a node runs several ranks.
    """
    import torch.distributed as dist

    env = _environment()
    initialized = dist.is_available() and dist.is_initialized()
    size = dist.get_world_size() if initialized else (env[1] if env else 1)
    if size == 1:
        return None
    if not dist.is_available():
        raise ConfigError("this PyTorch was built without torch.distributed; run one process, or install a "
                          "build with it")
    local, local_size = (env[2], env[3]) if env else (0, 1)
    if device in ("cuda", "auto") and torch.cuda.is_available() and local_size > 1:
        torch.cuda.set_device(local % torch.cuda.device_count())
    if not initialized:
        dist.init_process_group("gloo", timeout=_timeout())
    return World(rank=dist.get_rank(), size=dist.get_world_size(), watch=RankWatch().start(), owned=not initialized)
