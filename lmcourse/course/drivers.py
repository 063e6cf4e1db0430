"""Checks of behaviour: the course's code that a check runs where the learner's answer lives.

Most checks call an answer with inputs and judge the value it returns. A few
judge what an answer *does* to objects: a training step that updates a model and
an optimizer, a tie that must survive a checkpoint, a resume that must continue
exactly. In the grader the checks run in a process of their own
(:mod:`lmcourse.course.check_runner`) and the answer in the learner's, so such a
check sends the objects it built (a model, an optimizer, a generator: copies) to
the learner's process and runs one of the functions below there, with
:func:`in_learner`; what comes back is plain values (losses, weights, gradients,
booleans), which the check compares with what it computed itself. In a notebook
(Jupyter, nbval, the learner's own kernel) :func:`in_learner` just calls the
function.

The functions here never decide a grade: they exercise the answer and report
what happened. What the report must say is in the hidden checks.
"""

from __future__ import annotations

import io
import math

import torch
import torch.nn.functional as F

from lmcourse.costs import peak_memory
from lmcourse.data import random_windows

_REMOTE = None  # the checks' process sets this: (fn, args, kwargs) -> the value, run in the learner's process


def in_learner(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` run where the learner's answers live (in a notebook: here)."""
    if _REMOTE is not None:
        return _REMOTE(fn, args, kwargs)
    return fn(*args, **kwargs)


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# chapter 3: truncated backpropagation through time
def sgd_over_chunks(step, model, chunks, clip, lr=0.5):
    """Call ``step(model, x, y, state, opt, clip)`` on consecutive chunks with one SGD optimizer.

    Returns the losses it returned, the last state and the model's weights after.
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    state, losses = None, []
    for x, y in chunks:
        loss, state = step(model, x, y, state, opt, clip)
        losses.append(loss)
    return losses, state, _weights(model)


# chapter 6: counting without building
def without_building_modules(fn, calls):
    """``[fn(*args) for args in calls]`` while making any ``torch.nn.Module`` raises: counting must not build."""
    init = torch.nn.Module.__init__

    def refuse(self, *args, **kwargs):
        raise AssertionError("this answer must not build a model or a layer")

    torch.nn.Module.__init__ = refuse
    try:
        return [fn(*args) for args in calls]
    finally:
        torch.nn.Module.__init__ = init


# chapter 4: attention that must not hold a T x T matrix
def largest_new_tensor(fn, *args):
    """``(fn(*args), the most entries of any tensor fn created, its peak bytes)``, without gradients."""
    out = []
    with torch.no_grad():
        report = peak_memory(lambda: out.append(fn(*args)))
    largest = max((math.prod(shape) for _, shape, _ in report.allocations), default=0)
    return out[0], largest, report.peak_bytes


# chapter 7: gradient accumulation, an exact resume
def accumulation_report(accumulate, model, x, y, k, stale=False):
    """Call ``accumulate(model, x, y, k)``; its loss, the gradients it left, the batch size of each forward and
    the number of backward passes.

    ``stale``: every parameter starts with a gradient of ones (which must not leak in).
    """
    if stale:
        for p in model.parameters():
            p.grad = torch.ones_like(p)
    sizes: list[int] = []
    backwards: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, args: sizes.append(int(args[0].shape[0])))
    first = next(model.parameters())
    counter = first.register_hook(lambda g: backwards.append(1))  # once per backward pass through the model
    try:
        loss = accumulate(model, x, y, k)
    finally:
        handle.remove()
        counter.remove()
    grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    return loss, grads, sizes, len(backwards)


def train_step(model, opt, gen, stream, batch_size=4, length=16):
    """One step on random windows of ``stream`` drawn with ``gen``."""
    x, y = random_windows(stream, batch_size, length, generator=gen)
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()


def train_steps(run, stream, steps):
    """``steps`` steps of ``run`` = (model, optimizer, generator) without a pause; the weights after."""
    model, opt, gen = run
    for _ in range(steps):
        train_step(model, opt, gen, stream)
    return _weights(model)


def resume_report(make_checkpoint, restore, first, resumed, stream, before, after):
    """Train ``first`` ``before`` steps, checkpoint it with the answer, restore into ``resumed``, train ``after``.

    Returns the step ``restore`` gave back and ``resumed``'s weights after.
    """
    model, opt, gen = first
    for _ in range(before):
        train_step(model, opt, gen, stream)
    buf = io.BytesIO()
    torch.save(make_checkpoint(model, opt, gen, before), buf)
    buf.seek(0)
    model, opt, gen = resumed
    step = restore(torch.load(buf), model, opt, gen)
    for _ in range(after):
        train_step(model, opt, gen, stream)
    return step, _weights(model)


def resume_every_step(make_checkpoint, restore, start, fresh, stream):
    """Checkpoint after every step and go on in the next fresh (model, optimizer, generator) of ``fresh``.

    Returns the steps ``restore`` gave back and the last model's weights.
    """
    model, opt, gen = start
    steps = []
    for i, run in enumerate(fresh):
        buf = io.BytesIO()
        torch.save(make_checkpoint(model, opt, gen, i), buf)
        buf.seek(0)
        model, opt, gen = run
        steps.append(restore(torch.load(buf), model, opt, gen))
        train_step(model, opt, gen, stream)
    return steps, _weights(model)
