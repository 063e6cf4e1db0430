"""Chapter 7's exercises: every plausible wrong answer costs its own task points, and only those.

Each fixture ``tests/grading_fixtures/wrong_answers/07_*.ipynb`` is the solutions
notebook with one function's solution region replaced by a wrong answer (the table
:data:`WRONG_ANSWERS`); a ``*_calls_package`` one answers by calling what its task
forbids and must score 0 there. After the solutions change, rewrite them with
``python tests/test_exercises_07.py``; a fast test says when they are out of date.
The solution's full marks and the untouched exercise's zero are asserted for every
chapter by ``tests/test_grading.py``; every test reads the chapter's one grading
batch (``tests/chapter_grades.py``).
"""

from pathlib import Path

import nbformat
import pytest
from chapter_grades import grades_of, group
from test_exercises import (  # the one fixture builder and its checks, for every chapter
    assert_table_answer_costs_its_task,
    assert_table_covers_every_task,
    assert_table_fixtures_current,
    write_table_fixtures,
)

from lmcourse.course.exercises import SOLUTIONS_DIR

SOLUTION = SOLUTIONS_DIR / "07_training.ipynb"
FIXTURES = Path(__file__).parent / "grading_fixtures" / "wrong_answers"

# the rates of the updates already done, as planned (the part of replanned_lr every wrong answer below keeps)
_AS_PLANNED = """
    start = steps - decay
    if step < done:
        if step < warmup:
            return lr * (step + 1) / warmup
        if step < start:
            return lr
        return lr + (min_lr - lr) * (step - start + 1) / decay
    left = new_steps - done
"""

# fixture name: (task, function whose solution region is replaced, wrong body,
# a fragment of the message of the check that must catch it)
WRONG_ANSWERS = {
    # task wsd: a WSD run whose length changes while it trains
    "07_wsd_fresh_plan": ("wsd", "replanned_lr", _AS_PLANNED + """
    # a fresh plan for the new length: a run already decaying goes back up to the peak
    if step < new_steps - decay:
        return lr
    return lr + (min_lr - lr) * (step - (new_steps - decay) + 1) / decay
    """, "keeps coming down"),
    "07_wsd_old_decay_length": ("wsd", "replanned_lr", _AS_PLANNED + """
    if done > start:  # the old decay goes on as planned, then min_lr is held
        return max(min_lr, lr + (min_lr - lr) * (step - start + 1) / decay)
    begin = done + max(0, left - decay)
    if step < begin:
        return lr
    return lr + (min_lr - lr) * (step - begin + 1) / (new_steps - begin)
    """, "keeps coming down"),
    "07_wsd_repeats_reached_rate": ("wsd", "replanned_lr", _AS_PLANNED + """
    if done > start:  # the first new update repeats the rate reached
        reached = lr + (min_lr - lr) * (done - start) / decay
        return reached + (min_lr - reached) * (step - done) / max(left - 1, 1)
    begin = done + max(0, left - decay)
    if step < begin:
        return lr
    return lr + (min_lr - lr) * (step - begin + 1) / (new_steps - begin)
    """, "keeps coming down"),
    "07_wsd_rate_of_next_update": ("wsd", "replanned_lr", _AS_PLANNED + """
    if done > start:  # the old plan's rate of update done, one past the rate reached
        reached = lr + (min_lr - lr) * (done - start + 1) / decay
        return reached + (min_lr - reached) * (step - done + 1) / left
    begin = done + max(0, left - decay)
    if step < begin:
        return lr
    return lr + (min_lr - lr) * (step - begin + 1) / (new_steps - begin)
    """, "equal steps from the rate reached"),
    "07_wsd_full_decay_when_short": ("wsd", "replanned_lr", _AS_PLANNED + """
    if done > start:
        reached = lr + (min_lr - lr) * (done - start) / decay
        return reached + (min_lr - reached) * (step - done + 1) / left
    begin = max(done, new_steps - decay)  # a decay of the planned length, whatever is left
    if step < begin:
        return lr
    return lr + (min_lr - lr) * (step - begin + 1) / decay
    """, "cut short at the peak, fewer than decay updates left"),
    "07_wsd_decay_begun_at_start": ("wsd", "replanned_lr", _AS_PLANNED + """
    if done >= start:  # off by one: when done == start, update done - 1 was still at the peak
        reached = lr + (min_lr - lr) * (done - start) / decay
        return reached + (min_lr - reached) * (step - done + 1) / left
    begin = done + max(0, left - decay)
    if step < begin:
        return lr
    return lr + (min_lr - lr) * (step - begin + 1) / (new_steps - begin)
    """, "lengthened exactly where the decay would have begun"),
    "07_wsd_calls_package": ("wsd", "replanned_lr", _AS_PLANNED + """
    if done > start:
        reached = lr + (min_lr - lr) * (done - start) / decay
        return reached + (min_lr - reached) * (step - done + 1) / left
    begin = done + max(0, left - decay)
    if step < begin:
        return lr
    # the decay from PyTorch's linear scheduler
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.LinearLR(
        opt, start_factor=1.0, end_factor=min_lr / lr, total_iters=new_steps - begin)
    for _ in range(step - begin + 1):
        opt.step()
        sched.step()
    return opt.param_groups[0]["lr"]
    """, "must not call"),
    # task spikes: a detector of loss spikes
    "07_spikes_window_zscore": ("spikes", "find_spikes", """
    # the mean and sd of the previous 20 losses: the fall of the curve counts as noise
    out = []
    for t in range(20, len(losses)):
        prev = torch.tensor(losses[t - 20:t], dtype=torch.float64)
        if losses[t] > prev.mean() + 4 * prev.std(correction=0):
            out.append(t)
    return out
    """, "seven steps after a far larger spike"),
    "07_spikes_fixed_rise": ("spikes", "find_spikes", """
    # chapter 7's table read a rise near 1 nat as a spike: a fixed threshold
    return [t for t in range(20, len(losses)) if losses[t] - losses[t - 1] > 0.3]
    """, "missed the spikes at steps"),
    "07_spikes_std_of_rises": ("spikes", "find_spikes", """
    # the noise as the sd of every rise: the spikes' own rises inflate it
    x = torch.tensor(losses, dtype=torch.float64)
    rise = x[1:] - x[:-1]
    sd = rise.std()
    return [t for t in range(20, len(x)) if rise[t - 1] > rise.mean() + 6 * sd]
    """, "seven steps after a far larger spike"),
    "07_spikes_every_high_step": ("spikes", "find_spikes", """
    # every loss far above the level of the 5 before it: a spike that lasts is reported at each step
    x = torch.tensor(losses, dtype=torch.float64)
    rise = x[1:] - x[:-1]
    sd = 1.4826 * (rise - rise.median()).abs().median()
    return [t for t in range(20, len(x)) if x[t] > x[t - 5:t].median() + 10 * sd]
    """, "no spike begins at steps"),
    "07_spikes_median_of_values": ("spikes", "find_spikes", """
    # robust to spikes, but against the level and spread of the recent losses: the fall counts as noise
    x = torch.tensor(losses, dtype=torch.float64)
    out = []
    for t in range(20, len(x)):
        prev = x[t - 20:t]
        mid = prev.median()
        sd = 1.4826 * (prev - mid).abs().median()
        if x[t] > mid + 10 * sd:
            out.append(t)
    return out
    """, "while the loss still falls fast"),
    "07_spikes_scipy_find_peaks": ("spikes", "find_spikes", """
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(losses, prominence=0.2)
    return [int(p) for p in peaks]
    """, "does not allow"),
    # task accumulation: micro-batches with different numbers of targets
    "07_accumulation_mean_of_means": ("accumulation", "accumulate", """
    # chapter 7's recipe: each micro-batch's mean divided by k
    model.zero_grad(set_to_none=True)
    total = 0.0
    for xb, yb in zip(x.tensor_split(k), y.tensor_split(k), strict=True):
        loss = F.cross_entropy(model(xb).flatten(0, 1), yb.flatten()) / k
        loss.backward()
        total += loss.item()
    return total
    """, "the batch's loss is"),
    "07_accumulation_rows_weighted": ("accumulation", "accumulate", """
    # each micro-batch's mean weighted by its share of the rows
    model.zero_grad(set_to_none=True)
    total = 0.0
    for xb, yb in zip(x.tensor_split(k), y.tensor_split(k), strict=True):
        loss = F.cross_entropy(model(xb).flatten(0, 1), yb.flatten()) * len(xb) / len(x)
        loss.backward()
        total += loss.item()
    return total
    """, "the batch's loss is"),
    "07_accumulation_counts_padding": ("accumulation", "accumulate", """
    # summed, but divided by every position, padding included
    model.zero_grad(set_to_none=True)
    total = 0.0
    for xb, yb in zip(x.tensor_split(k), y.tensor_split(k), strict=True):
        loss = F.cross_entropy(model(xb).flatten(0, 1), yb.flatten(), reduction="sum") / y.numel()
        loss.backward()
        total += loss.item()
    return total
    """, "the batch's loss is"),
    "07_accumulation_token_weighted_means": ("accumulation", "accumulate", """
    # each micro-batch's mean times its share of the targets: 0 x nan where it has none
    model.zero_grad(set_to_none=True)
    targets = (y != -100).sum()
    total = 0.0
    for xb, yb in zip(x.tensor_split(k), y.tensor_split(k), strict=True):
        share = (yb != -100).sum() / targets
        loss = F.cross_entropy(model(xb).flatten(0, 1), yb.flatten()) * share
        loss.backward()
        total += loss.item()
    return total
    """, "micro-batches without a target"),
    "07_accumulation_drops_remainder": ("accumulation", "accumulate", """
    # k slices of B // k rows: the rows left over are never seen
    model.zero_grad(set_to_none=True)
    micro = x.shape[0] // k
    targets = int((y[:k * micro] != -100).sum())
    total = 0.0
    for i in range(k):
        rows = slice(i * micro, (i + 1) * micro)
        loss = F.cross_entropy(model(x[rows]).flatten(0, 1), y[rows].flatten(), reduction="sum") / targets
        loss.backward()
        total += loss.item()
    return total
    """, "as equal as the rows allow"),
    "07_accumulation_keeps_old_grads": ("accumulation", "accumulate", """
    # right, except that gradients left from before are added to
    targets = int((y != -100).sum())
    total = 0.0
    for xb, yb in zip(x.tensor_split(k), y.tensor_split(k), strict=True):
        loss = F.cross_entropy(model(xb).flatten(0, 1), yb.flatten(), reduction="sum") / targets
        loss.backward()
        total += loss.item()
    return total
    """, "gradients left from before"),
    "07_accumulation_chunk_uneven": ("accumulation", "accumulate", """
    # the right loss, but torch.chunk: 7 rows in 3 give [3, 3, 1] (and 6 rows in 4 only 3 chunks)
    model.zero_grad(set_to_none=True)
    targets = int((y != -100).sum())
    total = 0.0
    for xb, yb in zip(x.chunk(k), y.chunk(k), strict=True):
        loss = F.cross_entropy(model(xb).flatten(0, 1), yb.flatten(), reduction="sum") / targets
        loss.backward()
        total += loss.item()
    return total
    """, "as equal as the rows allow"),
    "07_accumulation_whole_batch": ("accumulation", "accumulate", """
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    return loss.item()
    """, "as equal as the rows allow"),
    "07_accumulation_calls_package": ("accumulation", "accumulate", """
    from lmcourse.objectives import Masked
    from lmcourse.train import TrainConfig

    model.zero_grad(set_to_none=True)
    objective = Masked(TrainConfig(batch_size=len(x), grad_accum=k), x, 11)
    objective.chosen = int((y != -100).sum())
    total = 0.0
    for xb, yb in zip(x.tensor_split(k), y.tensor_split(k), strict=True):
        loss = objective.loss(model, xb, yb) / k
        loss.backward()
        total += loss.item()
    return total
    """, "must not call"),
    # task resume: a checkpoint from which a run with dropout and a scheduler resumes exactly
    "07_resume_no_torch_rng": ("resume", "restore", """
    # dropout's random state saved but never put back
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    gen.set_state(ckpt["generator"])
    return ckpt["step"]
    """, "from step 4 on, the first after the resume"),
    "07_resume_no_scheduler": ("resume", "restore", """
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])  # its rate is right for one step only
    gen.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch"])
    return ckpt["step"]
    """, "though the first step after the resume matches"),
    "07_resume_no_generator": ("resume", "restore", """
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["torch"])
    return ckpt["step"]
    """, "from step 4 on"),
    "07_resume_reseeds_dropout": ("resume", "restore", """
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    gen.set_state(ckpt["generator"])
    torch.manual_seed(ckpt["step"])  # a seed is not the state the run had reached
    return ckpt["step"]
    """, "from step 4 on"),
    "07_resume_generator_object": ("resume", "make_checkpoint", """
    # the generator itself, not its state: weights_only refuses it
    return {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "generator": gen,
            "torch": torch.get_rng_state(), "step": step}
    """, "weights_only=True) cannot read the checkpoint"),
    "07_resume_weights_only": ("resume", "make_checkpoint", """
    return {"model": model.state_dict(), "step": step,
            "optimizer": torch.optim.AdamW(model.parameters(), lr=1e-2).state_dict(),
            "scheduler": sched.state_dict(), "generator": gen.get_state(),
            "torch": torch.get_rng_state()}
    """, "from step 4 on"),
    "07_resume_calls_package": ("resume", "make_checkpoint", """
    from lmcourse.train import save_checkpoint

    save_checkpoint("/tmp/run.pt", model, step, opt)
    return {}
    """, "must not call"),
}


def write_fixtures() -> None:
    write_table_fixtures(SOLUTION, WRONG_ANSWERS, FIXTURES)


def test_fixtures_are_the_solutions_with_one_wrong_answer():
    assert_table_fixtures_current(SOLUTION, WRONG_ANSWERS, FIXTURES, "tests/test_exercises_07.py")


def test_every_task_has_a_wrong_answer_and_every_forbid_a_calls_package_fixture():
    assert_table_covers_every_task(SOLUTION, WRONG_ANSWERS)


@pytest.mark.slow
@group("07")
def test_solution_scores_full_marks():
    rows = grades_of(SOLUTION)
    assert set(rows) == {"wsd", "spikes", "accumulation", "resume"}
    assert sum(r.max_points for r in rows.values()) == 12
    assert all(r.points == r.max_points and r.status == "passed" for r in rows.values()), rows


@pytest.mark.slow
@group("07")
@pytest.mark.parametrize("name", sorted(WRONG_ANSWERS))
def test_wrong_answer_costs_its_task_points_and_no_others(name):
    assert_table_answer_costs_its_task(SOLUTION, WRONG_ANSWERS, FIXTURES, name)


# right answers the text allows, which must keep full marks: function -> (body, task)
ACCEPTED = {
    # one robust noise level for the whole run (median absolute deviation of every rise)
    "spikes_global_mad": ("find_spikes", """
    x = torch.tensor(losses, dtype=torch.float64)
    if len(x) < 3:
        return []
    rise = x[1:] - x[:-1]
    mid = rise.median()
    sd = 1.4826 * (rise - mid).abs().median()
    return [t for t in range(1, len(x)) if rise[t - 1] > mid + 15 * sd]
    """, "spikes"),
    # the scheduler stepped forward to the saved step instead of loaded
    "resume_fast_forward": ("restore", """
    model.load_state_dict(ckpt["model"])
    for _ in range(ckpt["step"]):
        sched.step()
    opt.load_state_dict(ckpt["optimizer"])
    gen.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch"])
    return ckpt["step"]
    """, "resume"),
    # gradients summed by hand with torch.autograd.grad, the loss without F.cross_entropy
    "accumulation_autograd_grad": ("accumulate", """
    params = list(model.parameters())
    grads = [torch.zeros_like(p) for p in params]
    n = (y >= 0).sum()
    total = 0.0
    for xb, yb in zip(x.tensor_split(k), y.tensor_split(k), strict=True):
        logp = torch.log_softmax(model(xb), dim=-1)
        picked = logp.gather(-1, yb.clamp(min=0)[..., None])[..., 0]
        loss = -(picked * (yb >= 0)).sum() / n
        for g, d in zip(grads, torch.autograd.grad(loss, params), strict=True):
            g += d
        total += loss.item()
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    return total
    """, "accumulation"),
}


@pytest.mark.slow
def test_an_accepted_variant_scores_full_marks(tmp_path):
    from chapter_grades import _pool
    from test_exercises import with_wrong_answer

    from lmcourse.course.grade import grade_notebooks

    items = []
    for name, (function, body, _) in ACCEPTED.items():
        path = tmp_path / name / "07_training.ipynb"
        path.parent.mkdir()
        nbformat.write(with_wrong_answer(nbformat.read(SOLUTION, as_version=4), function, body), path)
        items.append((path, name))
    for (_, name), rows in zip(items, grade_notebooks(items, jobs=2, warm=_pool()), strict=True):
        row = next(r for r in rows if r.task == ACCEPTED[name][2])
        assert row.points == row.max_points, (name, row)

if __name__ == "__main__":
    write_fixtures()
    print(f"wrote {len(WRONG_ANSWERS)} fixtures to {FIXTURES}")
