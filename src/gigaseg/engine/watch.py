"""Collectives that notice a rank that died, stopped or hangs, and name it (NOTE [Rank faults]).

``RankWatch`` runs beside a ``torch.distributed`` process group: every rank beats in the group's
store, and a rank waiting for the others watches their beats. ``all_reduce``, ``broadcast`` and
``barrier`` here are ``torch.distributed``'s, watched while a ``RankWatch`` is started (plain ones
otherwise): a rank waiting for another that has not answered for ``timeout`` seconds raises
``DistributedError`` naming it, and so do the others.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from ..errors import ConfigError, DistributedError

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["RankWatch", "fault_timeout", "all_reduce", "broadcast", "barrier", "TIMEOUT_ENV", "DEFAULT_TIMEOUT_S"]

#: Seconds a rank may go without answering (dead, stopped, hung, cut off) before every other
#: rank stops, naming it, unless ``GIGASEG_DIST_TIMEOUT`` says otherwise (NOTE [Rank faults]).
DEFAULT_TIMEOUT_S = 120.0
TIMEOUT_ENV = "GIGASEG_DIST_TIMEOUT"

_T = TypeVar("_T")

# NOTE [Rank faults]
# A rank that dies (kill -9, a segfault, the out-of-memory killer, a lost node) or stops (SIGSTOP,
# a hang) must stop the others within a known time, with a message that names it, and a
# collective must never be left waiting in gloo: gloo cannot abort an operation in flight (its
# threads wait until the process group's timeout, even at exit), and that timeout cannot tell a
# dead rank from one that is still working on its share of a gigapixel step.
#
# So every watched collective is done in two parts. First each rank says in the process group's
# store that it has arrived (``store.add`` on a counter of that collective), then waits in Python
# until all have: it polls the counter (sleeps doubling from 0.1 ms to 0.5 ms, or 0.1 ms per rank
# for more than 5 ranks, so that the store answers at most ~10,000 polls a second) and, every
# ``interval`` (timeout / 8) seconds, the ranks' beats and the fault key. Only then
# does the gloo (or NCCL) operation run, with every rank at hand, so it takes milliseconds; the
# process group's own timeout (``timeout`` too) only guards that short operation. A rank may wait
# at the arrival for as long as the others are working: a slow share of the tiles or of
# validation is not a fault.
#
# Beats: a daemon thread of every rank adds 1 to its counter in the store every ``interval``
# seconds. A waiting rank reads the counters of the ranks it waits for; one that has not changed
# for ``timeout`` seconds is silent: its process is gone, stopped, or cannot reach the store.
# The first rank that sees a fault writes it to the fault key (``compare_set``: the first
# writer's message stays), so every rank reports the same cause; a rank that stops on its own
# (an error outside the blocks that already tell the others, Ctrl-C, SIGTERM) writes it there
# too, so that the others stop at once instead of after the timeout. Store keys live under a
# token that rank 0 draws and broadcasts at the start, so a restarted job that keeps its store
# (torchrun --max-restarts) starts clean.
#
# What this does not catch: a rank whose process is alive but whose main thread never arrives
# (a deadlock, an I/O call that never returns) keeps beating, and the others wait for it. A
# rank that dies inside the short gloo operation makes gloo raise on the others at once (a
# stopped one: after the process group's timeout); the watch then names it from its beats.


def fault_timeout() -> float:
    """``GIGASEG_DIST_TIMEOUT`` (seconds, > 0), or DEFAULT_TIMEOUT_S."""
    value = os.environ.get(TIMEOUT_ENV, "")
    if not value.strip():
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not (seconds > 0 and seconds < 1e7):
        raise ConfigError(f"{TIMEOUT_ENV}={value!r} must be a number of seconds > 0, e.g. {DEFAULT_TIMEOUT_S:g}")
    return seconds


def _device(group: ProcessGroup | None) -> torch.device:
    """Where a collective's tensors live: the current CUDA device under NCCL, else the CPU."""
    import torch.distributed as dist

    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _pid_space() -> str:
    """This machine's boot and this process's pid namespace (Linux), or "" where unknown: two
    processes whose pids can be looked up in each other's /proc have the same one."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{socket.gethostname()}:{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _store_of_world() -> Any:
    import torch.distributed as dist

    world = dist.group.WORLD
    getter = getattr(world, "get_group_store", None)
    if getter is not None:
        try:
            return getter()
        except RuntimeError:
            pass
    from torch.distributed import distributed_c10d

    return distributed_c10d._get_default_store()


class RankWatch:
    """Beats and watched waits for the ranks of the default process group (NOTE [Rank faults]).

    ``start`` (on every rank together, right after ``init_process_group``) makes the watch the
    one that this module's collectives use; ``close`` ends it.

    Args:
        timeout: seconds a rank may go without answering before the others stop; default
            ``fault_timeout()`` (``GIGASEG_DIST_TIMEOUT``, else 120).
    """

    def __init__(self, timeout: float | None = None) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigError("RankWatch needs a process group: call torch.distributed.init_process_group first")
        self.timeout = float(timeout) if timeout is not None else fault_timeout()
        self.interval = max(self.timeout / 8, 0.05)
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        self.store = _store_of_world()
        self._prefix = ""
        self._seq: dict[str, int] = {}
        self._seen: dict[int, tuple[bytes, float]] = {}
        self._who: dict[int, tuple[int, str, str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: BaseException | None = None
        #: seconds spent waiting for the others at arrivals (load imbalance, and the store's round
        #: trips), and in the operations themselves; bytes all-reduced or broadcast (benchmarks)
        self.wait_s = 0.0
        self.op_s = 0.0
        self.bytes = 0
        #: when a list, each watched collective appends (what, wait seconds, operation seconds, bytes)
        self.trace: list[tuple[str, float, float, int]] | None = None

    # --- start and end -------------------------------------------------------------------------

    def start(self) -> RankWatch:
        """Draw the key token on rank 0, start beating, and become the active watch (on every rank)."""
        import torch.distributed as dist

        global _ACTIVE
        token = torch.zeros(1, dtype=torch.int64)
        if self.rank == 0:
            token = torch.randint(0, 2**62, (1,), dtype=torch.int64)
        token = token.to(_device(None))
        dist.broadcast(token, src=0)
        self._prefix = f"gigaseg/{int(token.item()):x}/"
        self.store.set(self._key(f"who/{self.rank}"), f"{os.getpid()}@{socket.gethostname()}@{_pid_space()}")
        self.store.add(self._key(f"beat/{self.rank}"), 1)
        dist.barrier()  # every rank's keys exist before anyone reads them
        self._thread = threading.Thread(target=self._beat, name="gigaseg-rank-beat", daemon=True)
        self._thread.start()
        _ACTIVE = self
        return self

    def close(self) -> None:
        """Stop beating; this module's collectives are plain ones again."""
        global _ACTIVE
        if _ACTIVE is self:
            _ACTIVE = None
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)  # a daemon: one stuck in a store call does not hold the exit

    def _beat(self) -> None:
        key = self._key(f"beat/{self.rank}")
        while not self._stop.wait(self.interval):
            try:
                self.store.add(key, 1)
            except (RuntimeError, OSError) as exc:  # the waiting main thread reports it
                self._lost = exc
                return

    # --- faults --------------------------------------------------------------------------------

    def announce(self, message: str) -> None:
        """Tell every rank why this one stops (kept only if no rank has said so before)."""
        try:
            self.store.compare_set(self._key("fault"), "", f"{self.rank}\n{message}")
        except (RuntimeError, OSError):  # best effort: the store may be gone with the fault
            pass

    def announce_exit(self, exc: BaseException) -> None:
        """Announce why this rank leaves on ``exc`` (nothing for a DistributedError: the others know)."""
        if isinstance(exc, DistributedError):
            return
        if isinstance(exc, KeyboardInterrupt):
            self.announce(f"rank {self.rank} was interrupted (Ctrl-C or SIGTERM)")
        else:
            self.announce(f"rank {self.rank} failed: {type(exc).__name__}: {exc}")

    def check(self, ranks: Sequence[int], what: str) -> None:
        """Raise DistributedError if a rank announced a fault, the store is lost, or one of
        ``ranks`` has been silent for ``timeout`` seconds."""
        if self._lost is not None:
            raise self._store_lost(self._lost, what)
        fault = self._op(lambda: self.store.get(self._key("fault")) if self.store.check([self._key("fault")])
                         else b"", what)
        if fault:
            raise self._fault(fault, what)
        others = [r for r in ranks if r != self.rank]
        if not others:
            return
        beats = self._op(lambda: self.store.multi_get([self._key(f"beat/{r}") for r in others]), what)
        now = time.monotonic()
        for r, beat in zip(others, beats):
            seen = self._seen.get(r)
            if seen is None or seen[0] != beat:
                self._seen[r] = (beat, now)
        states = {r: self._process_state(r) for r in others}
        gone = [r for r in others if states[r] == "gone"]
        silent = [r for r in others if now - self._seen[r][1] >= self.timeout]
        if gone:  # on this node: no need to wait for the timeout
            self.announce(f"{self._names(gone)} {'is' if len(gone) == 1 else 'are'} gone: the process ended "
                          "(killed, or crashed) without a word")
        elif silent:
            why = ("the process is stopped (SIGSTOP, Ctrl-Z, a debugger)" if all(states[r] == "stopped" for r in silent)
                   else "the process died, was stopped or hangs, or its node lost the network")
            self.announce(f"{self._names(silent)} {'has' if len(silent) == 1 else 'have'} not answered for "
                          f"{self.timeout:g} s: {why}")
        if gone or silent:
            fault = self._op(lambda: self.store.get(self._key("fault")), what)
            raise self._fault(fault, what)

    def _fault(self, fault: bytes, what: str) -> DistributedError:
        head, _, message = fault.decode(errors="replace").partition("\n")
        first = int(head) if head.strip().lstrip("-").isdigit() else None
        rank = first
        if message.startswith("rank ") and message[5:].split(" ", 1)[0].isdigit():
            rank = int(message[5:].split(" ", 1)[0])  # the rank the message is about
        seen = "" if first in (None, self.rank, rank) else f" (seen by rank {first})"
        return DistributedError(f"{message}{seen}; rank {self.rank} stops too (it was {what})", rank=rank)

    def _store_lost(self, exc: BaseException, what: str) -> DistributedError:
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
        keeper = "torchrun's agent on the first node" if agent else "rank 0"
        return DistributedError(
            f"rank {self.rank} lost the connection to the process group's store at {where}, kept by {keeper}, "
            f"while {what} ({type(exc).__name__}: {exc}): {keeper} is gone or cut off; rank {self.rank} stops too",
            rank=None if agent else 0)

    def _where(self, rank: int) -> tuple[int, str, str]:
        """(pid, host, process-id space) of ``rank``'s process; (0, "?", "") if unknown."""
        if rank not in self._who:
            try:
                pid, host, space = self.store.get(self._key(f"who/{rank}")).decode(errors="replace").split("@", 2)
                self._who[rank] = (int(pid), host, space)
            except (RuntimeError, OSError, ValueError):
                self._who[rank] = (0, "?", "")
        return self._who[rank]

    def _names(self, ranks: Sequence[int]) -> str:
        return ", ".join(f"rank {r} (pid {self._where(r)[0]} on {self._where(r)[1]})" for r in ranks)

    def _process_state(self, rank: int) -> str | None:
        """"gone" or "stopped" for a process of this node (and of this process's pid namespace)
        that is (Linux's /proc), else None."""
        pid, _, space = self._where(rank)
        if pid <= 0 or not space or space != _pid_space():
            return None
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return "gone" if Path("/proc/self/stat").exists() else None
        except OSError:
            return None
        state = stat.rpartition(")")[2].split()[:1]
        if state and state[0] in ("Z", "X"):
            return "gone"
        return "stopped" if state and state[0] in ("T", "t") else None

    def _op(self, fn: Callable[[], _T], what: str) -> _T:
        """A store operation; a lost store is a DistributedError."""
        try:
            return fn()
        except DistributedError:
            raise
        except (RuntimeError, OSError) as exc:  # DistStoreError, DistNetworkError
            raise self._store_lost(exc, what) from exc

    # --- watched collectives -------------------------------------------------------------------

    def arrive(self, group: ProcessGroup | None, what: str) -> None:
        """Return when every rank of ``group`` has arrived here; raise DistributedError, naming
        the rank, when one is silent for ``timeout`` seconds or announced a fault."""
        import torch.distributed as dist

        t0 = time.perf_counter()
        g = group if group is not None else dist.group.WORLD
        assert g is not None
        name = g.group_name
        seq = self._seq[name] = self._seq.get(name, 0) + 1
        key = self._key(f"arrive/{name}/{seq}")
        size = dist.get_world_size(g)
        arrived = self._op(lambda: self.store.add(key, 1), what)
        if arrived >= size:
            if seq > 1:  # every rank has left the previous wait (it arrived here)
                prev = self._key(f"arrive/{name}/{seq - 1}")
                self._op(lambda: self.store.delete_key(prev), what)
            self.wait_s += time.perf_counter() - t0
            return
        ranks = dist.get_process_group_ranks(g)
        delay, cap = 0.0001, max(0.0005, 0.0001 * size)  # at most ~10,000 polls a second in all
        next_check = time.monotonic() + self.interval
        while True:
            time.sleep(delay)
            delay = min(2 * delay, cap)
            if self._op(lambda: self.store.add(key, 0), what) >= size:
                break
            if time.monotonic() >= next_check:
                self.check(ranks, f"waiting for the other ranks while {what}")
                next_check = time.monotonic() + self.interval
        self.wait_s += time.perf_counter() - t0

    def run(self, op: Callable[[], _T], group: ProcessGroup | None, what: str, nbytes: int = 0) -> _T:
        """``op`` (a collective over ``group`` of ``nbytes``) once every rank of it has arrived."""
        import torch.distributed as dist

        waited = self.wait_s
        self.arrive(group, what)
        t0 = time.perf_counter()
        try:
            return op()
        except RuntimeError as exc:  # a rank died or stopped inside the operation
            if isinstance(exc, DistributedError):
                raise
            raise self._cause(dist.get_process_group_ranks(group if group is not None else dist.group.WORLD),
                              what, exc) from exc
        finally:
            seconds = time.perf_counter() - t0
            self.op_s += seconds
            self.bytes += nbytes
            if self.trace is not None:
                self.trace.append((what, self.wait_s - waited, seconds, nbytes))

    def _cause(self, ranks: Sequence[int], what: str, exc: RuntimeError) -> DistributedError:
        """The fault behind a failed operation, from the beats (waiting up to ``timeout``)."""
        deadline = time.monotonic() + self.timeout + 2 * self.interval
        while time.monotonic() < deadline:
            try:
                self.check(ranks, f"in a collective while {what}")
            except DistributedError as fault:
                return fault
            time.sleep(self.interval)
        return DistributedError(f"a collective failed while {what} and no rank is silent ({exc}); "
                                f"rank {self.rank} stops")

    # --- small messages between ranks ---------------------------------------------------------

    def put(self, name: str, data: bytes) -> None:
        """Leave ``data`` under ``name`` for the other ranks (``collect``)."""
        key = self._key(f"msg/{name}")
        self._op(lambda: self.store.set(key, data), f"sending {name}")

    def collect(self, names: Sequence[str]) -> list[bytes | None]:
        """What was ``put`` under each of ``names``; None where nothing was (or the store is gone)."""
        out: list[bytes | None] = []
        for name in names:
            key = self._key(f"msg/{name}")
            try:
                out.append(self.store.get(key) if self.store.check([key]) else None)
            except (RuntimeError, OSError):
                out.append(None)
        return out

    def _key(self, name: str) -> str:
        return self._prefix + name


_ACTIVE: RankWatch | None = None


def active() -> RankWatch | None:
    """The started RankWatch of this process, if any."""
    return _ACTIVE


def all_reduce(tensor: torch.Tensor, group: ProcessGroup | None = None, *, what: str = "exchanging sums") -> None:
    """``torch.distributed.all_reduce`` (SUM, in place), watched when a RankWatch is started."""
    import torch.distributed as dist

    def op() -> None:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)

    if _ACTIVE is None:
        op()
    else:
        _ACTIVE.run(op, group, what, tensor.numel() * tensor.element_size())


def broadcast(tensor: torch.Tensor, src: int, group: ProcessGroup | None = None, *,
              what: str = "broadcasting") -> None:
    """``torch.distributed.broadcast`` (in place), watched when a RankWatch is started."""
    import torch.distributed as dist

    def op() -> None:
        dist.broadcast(tensor, src=src, group=group)

    if _ACTIVE is None:
        op()
    else:
        _ACTIVE.run(op, group, what, tensor.numel() * tensor.element_size())


def barrier(group: ProcessGroup | None = None, *, what: str = "waiting for the other ranks") -> None:
    """Every rank of ``group`` waits for the others (through the store when watched)."""
    import torch.distributed as dist

    if _ACTIVE is None:
        dist.barrier(group=group)
    else:
        _ACTIVE.arrive(group, what)
