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

# the windows of strided_nll, batch_size at a time (the part of its wrong answers below that is right)
_WINDOWS = """
    n = len(ids)
    width = min(window, n - 1)

    def run(starts):  # each window's NLLs of every token it predicts
        rows = []
        with torch.no_grad():
            for i in range(0, len(starts), batch_size):
                x = torch.stack([ids[s:s + width] for s in starts[i:i + batch_size]])
                y = torch.stack([ids[s + 1:s + 1 + width] for s in starts[i:i + batch_size]])
                logp = torch.log_softmax(model(x).double(), dim=-1)
                rows.extend(-logp.gather(-1, y[..., None])[..., 0])
        return rows
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
    # task evaluation: every token scored once, in sliding windows, and bits per byte
    "07_evaluation_scores_overlap_twice": ("evaluation", "strided_nll", _WINDOWS + """
    # every window scores all it predicts: the overlaps are scored again
    starts = list(range(0, n - 1 - width, stride)) + [n - 1 - width]
    return torch.cat(run(starts))
    """, "some are scored more than once"),
    "07_evaluation_drops_tail": ("evaluation", "strided_nll", _WINDOWS + """
    # windows every stride while a whole one fits: the tokens after the last are never scored
    starts = list(range(0, n - width, stride))
    rows = run(starts)
    return torch.cat([rows[0]] + [r[width - stride:] for r in rows[1:]])
    """, "some are not scored"),
    "07_evaluation_short_last_window": ("evaluation", "strided_nll", _WINDOWS + """
    # Hugging Face's guide: the last window starts a stride after the one before and is shorter
    starts = list(range(0, n - width, stride))
    rows = run(starts)
    out = [rows[0]] + [r[width - stride:] for r in rows[1:]]
    end = starts[-1] + width  # ids[1 .. end] are scored
    if end < n - 1:
        s = starts[-1] + stride
        logp = torch.log_softmax(model(ids[None, s:n - 1]).double(), dim=-1)[0]
        out.append(-logp.gather(-1, ids[s + 1:, None])[end - s:, 0])
    return torch.cat(out)
    """, "the window that starts at 14"),
    "07_evaluation_rescores_last_overlap": ("evaluation", "strided_nll", _WINDOWS + """
    # each window writes its last stride predictions: the last window, moved back, overwrites
    # tokens the window before it scored with more context
    starts = list(range(0, n - 1 - width, stride)) + [n - 1 - width]
    out = torch.empty(n - 1, dtype=torch.float64)
    for s, row in zip(starts, run(starts), strict=True):
        if s == 0:
            out[:width] = row
        else:
            out[s + width - stride:s + width] = row[width - stride:]
    return out
    """, "the window that starts at 12"),
    "07_evaluation_first_window_no_credit": ("evaluation", "strided_nll", _WINDOWS + """
    # the first window too scores only its last stride predictions
    starts = list(range(0, n - 1 - width, stride)) + [n - 1 - width]
    out, done = [], width - stride
    for s, row in zip(starts, run(starts), strict=True):
        out.append(row[max(0, done - s):])
        done = s + width
    return torch.cat(out)
    """, "some are not scored"),
    "07_evaluation_one_batch": ("evaluation", "strided_nll", _WINDOWS.replace("batch_size", "len(starts)") + """
    # the right layout, every window in one call whatever batch_size says
    starts = list(range(0, n - 1 - width, stride)) + [n - 1 - width]
    out, done = [], 0
    for s, row in zip(starts, run(starts), strict=True):
        out.append(row[done - s:])
        done = s + width
    return torch.cat(out)
    """, "3 calls of the model"),
    "07_evaluation_calls_package": ("evaluation", "strided_nll", """
    from lmcourse.train import stream_token_nll

    return stream_token_nll(model, ids, window, stride, batch_size).double()
    """, "must not call"),
    "07_evaluation_bits_per_character": ("evaluation", "bits_per_byte", """
    # characters, not bytes: the same as bytes only for ASCII
    nats = torch.as_tensor(nll, dtype=torch.float64).sum().item()
    return nats / math.log(2) / len("".join(pieces[1:]))
    """, "expected 1.4"),
    "07_evaluation_nats_per_byte": ("evaluation", "bits_per_byte", """
    nats = torch.as_tensor(nll, dtype=torch.float64).sum().item()
    return nats / len("".join(pieces[1:]).encode("utf-8"))
    """, "expected 1.4"),
    "07_evaluation_counts_first_token": ("evaluation", "bits_per_byte", """
    # the bytes of every token, the first one too, though nothing predicts it
    nats = torch.as_tensor(nll, dtype=torch.float64).sum().item()
    return nats / math.log(2) / len("".join(pieces).encode("utf-8"))
    """, "expected 1.4"),
    "07_evaluation_mean_of_ratios": ("evaluation", "bits_per_byte", """
    # each token's bits per byte, averaged over the tokens
    sizes = torch.tensor([len(p.encode("utf-8")) for p in pieces[1:]], dtype=torch.float64)
    return (torch.as_tensor(nll, dtype=torch.float64) / math.log(2) / sizes).mean().item()
    """, "expected 1.4"),
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
    assert set(rows) == {"wsd", "spikes", "accumulation", "evaluation"}
    assert sum(r.max_points for r in rows.values()) == 13
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
    # the windows from a count, one per call of F.cross_entropy's rows, the NLLs left in float32
    "evaluation_counted_windows": ("strided_nll", """
    n = len(ids)
    width = min(window, n - 1)
    count = 1 + math.ceil((n - 1 - width) / stride)
    starts = [min(k * stride, n - 1 - width) for k in range(count)]
    parts = []
    for i in range(0, count, batch_size):
        chunk = starts[i:i + batch_size]
        x = torch.stack([ids[s:s + width] for s in chunk])
        y = torch.stack([ids[s + 1:s + 1 + width] for s in chunk])
        logits = model(x).float()
        nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(len(chunk), width)
        for k, s in enumerate(chunk, start=i):
            new = 0 if k == 0 else starts[k - 1] + width - s
            parts.append(nll[k - i, new:].detach())
    return torch.cat(parts)
    """, "evaluation"),
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
