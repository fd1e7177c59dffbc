"""``lwlc analyze`` on several processes: the paths shared out, the rows gathered on rank 0.

Under ``torchrun`` (or ``lwlc analyze --devices N``, which starts ``torchrun`` on this machine)
every process builds the same measurement; the chunks of paths are dealt round-robin, and after
each round every process's rows are gathered (``torch.distributed``: gloo on CPUs, NCCL on
GPUs) so that rank 0 writes them, in order, exactly as one process would. Chunks are the ones a
single process evaluates, so the numbers are the same. A process that stops (killed, crashed)
makes the others' next collective fail: that is :class:`PeerLost`, one line, and rank 0's
finished rows stay on disk for ``--resume``.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import InterpolationPath
from lwlc.core.measurement import PreparedSweep
from lwlc.core.sweep import Rows, SweepResult


class PeerLost(LwlcError):
    """Another process of the analysis stopped, or cannot be reached, during a collective."""


@contextmanager
def _with_peers() -> Iterator[None]:
    """Around a collective: gloo and NCCL raise RuntimeError when a peer's connection closes
    (its process was killed or crashed); say so in one line instead of a traceback."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise  # this process's own memory (gathered rows go to its GPU), not a peer
    except RuntimeError as err:
        said = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip())  # gloo's "[pair.cc:545] "
        raise PeerLost(
            f"another process of this analysis stopped or cannot be reached "
            f"({said.split('. ')[0]}; the launcher's report names the process)"
        ) from err


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes of one analysis (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1

    @property
    def lead(self) -> bool:
        """Whether this process writes the results and prints (rank 0)."""
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value``, on every process."""
        if self.size == 1:
            return value
        box = [value]
        with _with_peers():
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.size > 1:
            with _with_peers():
                dist.barrier()

    def sweep(
        self,
        measurement: PreparedSweep,
        todo: Sequence[InterpolationPath],
        on_rows: Callable[[Rows, Rows], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> SweepResult:
        """Evaluate ``todo``: all of it in one process, else this process's chunks, round by
        round, handing every process's rows of each round to ``on_rows`` (on every rank)."""
        if self.size == 1:
            return measurement.run(set(todo), on_rows=on_rows, progress=progress)
        size = measurement.sizes.chunk_size
        chunks = [list(todo[i : i + size]) for i in range(0, len(todo), size)]
        result = SweepResult()
        for start in range(0, max(1, math.ceil(len(chunks) / self.size)) * self.size, self.size):
            index = start + self.rank
            found = measurement.run(set(chunks[index]) if index < len(chunks) else set())
            result.endpoints = result.endpoints or found.endpoints
            everyone: list[Any] = [None] * self.size
            with _with_peers():
                dist.all_gather_object(everyone, (found.curves, found.barriers))
            curves = [r for c, _ in everyone for r in c]
            barriers = [r for _, b in everyone for r in b]
            result.curves += curves
            result.barriers += barriers
            if on_rows is not None:
                on_rows(curves, barriers)
            if progress is not None:
                progress(sum(len(c) for c in chunks[start : start + self.size]))
        return result


def join(device: torch.device) -> tuple[Processes, torch.device]:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), if any: gloo on the
    CPU, NCCL with one GPU per process (``LOCAL_RANK``); returns this process and its device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return Processes(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size()), device


def leave() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(argv: Sequence[str], count: int) -> int:
    """Run ``lwlc analyze argv`` as ``count`` processes on this machine (``torchrun
    --standalone``); returns its exit code."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={count}", "-m", "lwlc", "analyze", *argv,
    ]  # fmt: skip
    return subprocess.run(command, check=False).returncode
