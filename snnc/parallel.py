"""Work split across processes with torch.distributed, and sums that do not depend on it.

``torchrun --nproc-per-node N --no-python snnc convert ...`` (or ``snnc eval``) starts N
copies of the command; torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address, and :func:`init_from_env` joins them into one process group (gloo
on CPU, NCCL on CUDA). Every rank runs the same pipeline on its own shard of the samples
(:meth:`Group.shard`, whole batches, in order) and the ranks combine what they measured
through :meth:`Group.all_reduce`; only rank 0 writes files and prints.

A conversion must not depend on how many ranks ran it. Maxima and integer counts reduce
exactly anyway; sums of floating-point numbers do not (addition is not associative), so
every mean a calibration pass takes is accumulated by :class:`ExactSum`: each float64
addend is split into 32-bit pieces of a fixed-point number wide enough for every float64,
and the pieces are added as int64 integers, which is exact, hence independent of the
order of the additions, of the batch-to-rank assignment and of the reduction tree.
Only the sizes of the statistics travel between ranks, never anything per sample
(:attr:`Group.bytes_reduced` counts them).
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

import numpy as np
import torch

from snnc.errors import SnncError


@dataclass
class Group:
    """The processes of one job: this process's ``rank`` among ``world`` (1: alone)."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"  # where collectives run (NCCL needs CUDA tensors)
    bytes_reduced: int = 0  # payload bytes this rank has contributed to collectives

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, n: int) -> range:
        """This rank's items of ``range(n)``: a contiguous block, earlier ranks take the
        remainder (rank r of w gets ``n // w`` items, one more when ``r < n % w``)."""
        q, r = divmod(n, self.world)
        lo = self.rank * q + min(self.rank, r)
        return range(lo, lo + q + (1 if self.rank < r else 0))

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """The element-wise ``sum`` or ``max`` of ``t`` over all ranks (``t`` itself when alone)."""
        if not self.distributed:
            return t
        import torch.distributed as dist

        buf = t.detach().to(self.device).contiguous()
        dist.all_reduce(buf, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
        self.bytes_reduced += buf.numel() * buf.element_size()
        return buf.to(t.device)

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``t`` on every rank."""
        if not self.distributed:
            return t
        import torch.distributed as dist

        buf = t.detach().to(self.device).contiguous()
        dist.broadcast(buf, 0)
        self.bytes_reduced += buf.numel() * buf.element_size()
        return buf.to(t.device)

    def gather_rows(self, local: np.ndarray, n: int) -> np.ndarray:
        """The rows of all ranks' shards of ``range(n)`` concatenated in order (every rank
        gets the whole array): ``local`` holds this rank's ``len(self.shard(n))`` rows."""
        if not self.distributed:
            return local
        import torch.distributed as dist

        width = max(len(Group(r, self.world).shard(n)) for r in range(self.world))
        buf = torch.zeros((width, *local.shape[1:]), dtype=torch.from_numpy(local[:0]).dtype)
        buf[: len(local)] = torch.from_numpy(np.ascontiguousarray(local))
        buf = buf.to(self.device)
        parts = [torch.empty_like(buf) for _ in range(self.world)]
        dist.all_gather(parts, buf)
        self.bytes_reduced += buf.numel() * buf.element_size()
        rows = [p[: len(Group(r, self.world).shard(n))].cpu().numpy() for r, p in enumerate(parts)]
        return np.concatenate(rows, axis=0)


_GROUP = Group()


def current() -> Group:
    """The group of this process (rank 0 of 1 unless :func:`init_from_env` joined one)."""
    return _GROUP


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def init_from_env(device: str | None = None, timeout_s: float = 1800.0) -> Group:
    """Join the process group torchrun describes in the environment (a no-op when the
    job has one process). ``device`` ``cuda`` selects NCCL and this rank's GPU
    (``LOCAL_RANK``); anything else gloo on CPU."""
    global _GROUP
    if not launched() or _GROUP.distributed:
        return _GROUP
    import torch.distributed as dist

    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError) as e:
        raise SnncError(f"WORLD_SIZE is set but the torchrun environment is incomplete ({e}); launch with `torchrun --nproc-per-node N --no-python snnc ...`") from None
    cuda = device is not None and str(device).startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise SnncError("--device cuda was given but this machine has no CUDA device; leave --device out to run on CPU (gloo)")
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=_dt.timedelta(seconds=timeout_s))
    _GROUP = Group(rank=rank, world=world, device=f"cuda:{local}" if cuda else "cpu")
    return _GROUP


def local_device(device: str) -> str:
    """``device`` with ``cuda`` pinned to this rank's GPU under torchrun."""
    if device == "cuda" and _GROUP.distributed:
        return _GROUP.device
    return device


def finish(wait: bool = False) -> None:
    """Leave the process group (at the end of a command). ``wait`` (after a command that
    succeeded on every rank): first wait for all ranks, so that none tears its connections
    down while rank 0 is still writing (a rank leaving early was seen to abort in gloo's
    teardown, "terminate called without an active exception")."""
    global _GROUP
    if _GROUP.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()
    _GROUP = Group()


# -------------------------------------------------------------- exact sums
_LIMB = 32
_MASK = (1 << _LIMB) - 1
_OFFSET = 1126  # every finite float64 is M * 2**(E) with integer |M| < 2**53 and E >= -1126
_LIMBS = (_OFFSET + 1024 + 53) // _LIMB + 3  # 72 limbs cover 2**-1126 .. 2**1024 and carries


class ExactSum:
    """The exact sum of float64 arrays of one shape, kept as int64 limbs of a fixed-point
    number (``2**-1126`` units), so that the result does not depend on the order of the
    additions or on how they were split across ranks.

    Each limb gains less than 2**33 in magnitude per addition, so 2**30 additions are safe.
    """

    def __init__(self, shape: tuple[int, ...] | int):
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.limbs = np.zeros((int(np.prod(self.shape)), _LIMBS), dtype=np.int64)
        self.count = 0  # a plain integer carried along (e.g. the number of elements summed)

    def add(self, values: np.ndarray | torch.Tensor, count: int = 0) -> None:
        v = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, dtype=np.float64)
        v = v.reshape(-1)
        if v.size != len(self.limbs):
            raise ValueError(f"ExactSum of {self.shape} got {v.size} values")
        if not np.isfinite(v).all():
            raise SnncError("a calibration statistic is not finite (NaN or inf): the network overflows float32 on the calibration data")
        self.count += int(count)
        m, e = np.frexp(v)  # v = m * 2**e, 0.5 <= |m| < 1
        mant = np.abs(np.ldexp(m, 53)).astype(np.int64)  # |v| = mant * 2**(e - 53), mant < 2**53
        sign = np.where(v < 0, -1, 1).astype(np.int64)
        shift = (e.astype(np.int64) - 53) + _OFFSET
        q, s = shift // _LIMB, shift % _LIMB
        lo, hi = (mant & _MASK) << s, (mant >> _LIMB) << s  # < 2**63 and < 2**52
        at = np.arange(len(v)) * _LIMBS + q  # each row's lowest piece: no index repeats below
        flat = self.limbs.reshape(-1)
        for k, piece in enumerate((lo & _MASK, (lo >> _LIMB) + (hi & _MASK), hi >> _LIMB)):
            flat[at + k] += sign * piece

    def reduce(self, group: Group) -> None:
        """Sum the limbs (and counts) of all ranks; every rank then holds the total."""
        if group.distributed:
            self.limbs = group.all_reduce(torch.from_numpy(self.limbs)).numpy()
            self.count = int(group.all_reduce(torch.tensor([self.count], dtype=torch.int64))[0])

    def value(self) -> np.ndarray:
        """The sum as float64: the limbs' carries normalised, a negative sum negated so that
        every limb is non-negative, then the limbs added from the top."""
        limbs = _normalise(self.limbs.copy())
        neg = limbs[:, -1] < 0
        limbs[neg] = _normalise(-limbs[neg])
        out = np.zeros(len(limbs))
        for k in range(_LIMBS - 1, -1, -1):
            out = out + np.ldexp(limbs[:, k].astype(np.float64), _LIMB * k - _OFFSET)
        return np.where(neg, -out, out).reshape(self.shape)


def _normalise(limbs: np.ndarray) -> np.ndarray:
    """Carry so that limbs 0..n-2 lie in [0, 2**32) (the top limb keeps the sign)."""
    for k in range(_LIMBS - 1):
        carry = limbs[:, k] >> _LIMB
        limbs[:, k] -= carry << _LIMB
        limbs[:, k + 1] += carry
    return limbs
