"""Training-loop helpers shared by the example training scripts."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F


def set_determinism(seed: int, threads: int, *, numpy_seed: bool = False, flush_denormal: bool = False) -> None:
    """Seed torch (and numpy's global generator when ``numpy_seed``), use ``threads`` CPU
    threads and deterministic algorithms, and optionally flush denormals to zero."""
    torch.manual_seed(seed)
    if numpy_seed:
        np.random.seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    if flush_denormal:
        torch.set_flush_denormal(True)


@torch.no_grad()
def batched_forward(model: torch.nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    """``model(x)`` in eval mode, ``batch`` samples at a time, concatenated."""
    model.eval()
    return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


def minibatches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """The index batches of one shuffled epoch over ``n`` samples: ``torch.randperm(n,
    generator=gen)`` (drawn when the first batch is asked for) in slices of ``batch_size``."""
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size]


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, sched=None) -> None:
    """Zero the gradients, back-propagate ``loss``, step the optimizer (and ``sched``)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()


def train_epoch(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    batch_size: int,
    *,
    sched=None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_steps: int | None = None,
) -> tuple[float, float, int]:
    """One epoch of minibatch training of a classifier over ``(x, y)`` shuffled with ``gen``:
    each batch goes through ``transform`` (augmentation, layout), then ``loss_fn(logits, y)``
    and :func:`optimizer_step`. Stops early after ``max_steps`` batches when given.

    Returns ``(mean training loss, training accuracy, batches done)``."""
    model.train()
    tot_loss, correct, seen, steps = 0.0, 0, 0, 0
    for idx in minibatches(len(x), batch_size, gen):
        xb, yb = x[idx], y[idx]
        if transform is not None:
            xb = transform(xb)
        logits = model(xb)
        loss = loss_fn(logits, yb)
        optimizer_step(opt, loss, sched)
        tot_loss += loss.item() * len(yb)
        correct += (logits.argmax(1) == yb).sum().item()
        seen += len(yb)
        steps += 1
        if steps == max_steps:
            break
    return tot_loss / seen, correct / seen, steps
