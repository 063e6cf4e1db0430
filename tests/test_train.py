"""The training core: schedule, optimizer groups, learning, determinism."""

import math
from itertools import pairwise

import pytest
import torch

from lmcourse.train import History, TrainConfig, evaluate, lr_at, make_optimizer, train
from lmcourse.transformer import GPT, GPTConfig


def test_warmup_is_linear_and_cosine_ends_at_min_lr():
    cfg = TrainConfig(steps=200, warmup_steps=20, lr=3e-3, min_lr=3e-4)
    warm = [lr_at(s, cfg) for s in range(20)]
    steps = [b - a for a, b in pairwise(warm)]
    assert steps == pytest.approx([cfg.lr / 20] * 19)
    assert lr_at(19, cfg) == pytest.approx(cfg.lr)
    assert lr_at(20, cfg) == pytest.approx(cfg.lr)  # the decay starts at the peak
    assert lr_at(110, cfg) == pytest.approx((cfg.lr + cfg.min_lr) / 2)  # halfway down the cosine
    assert lr_at(200, cfg) == pytest.approx(cfg.min_lr)
    assert lr_at(500, cfg) == pytest.approx(cfg.min_lr)
    decay = [lr_at(s, cfg) for s in range(20, 201)]
    assert all(a >= b for a, b in pairwise(decay))


def test_no_warmup():
    cfg = TrainConfig(steps=10, warmup_steps=0, lr=1.0, min_lr=0.0)
    assert lr_at(0, cfg) == 1.0
    assert lr_at(5, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_bad_configs():
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)


def test_weight_decay_only_on_matrices():
    model = GPT(GPTConfig(vocab_size=7, context_length=4, d_model=8, n_layers=1, n_heads=2))
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    names = {id(p): n for n, p in model.named_parameters()}  # a tied matrix appears once
    assert {names[id(p)] for p in decayed["params"]} == {n for n, p in model.named_parameters() if p.dim() == 2}
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()


def _tiny_run(seed=0, steps=60):
    g = torch.Generator().manual_seed(0)
    text = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7] * 64)  # a repeating pattern: easy to learn
    text = torch.where(torch.rand(len(text), generator=g) < 0.05, 8, text)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=9, context_length=16, d_model=16, n_layers=1, n_heads=2))
    cfg = TrainConfig(steps=steps, batch_size=8, context_length=16, lr=1e-2, min_lr=1e-3, warmup_steps=5,
                      eval_every=20, eval_batches=2, seed=seed)
    return model, train(model, text[:400], text[400:], cfg)


def test_loss_decreases_and_history_is_recorded():
    model, hist = _tiny_run()
    assert hist.steps == [0, 20, 40, 60]
    assert len(hist.train_loss) == len(hist.val_loss) == len(hist.lr) == 4
    assert hist.val_loss[0] == pytest.approx(math.log(9), abs=0.1)  # untrained: about uniform
    assert hist.val_loss[-1] < 0.6 * hist.val_loss[0]
    assert hist.train_loss[-1] < 0.6 * hist.train_loss[0]


def test_same_seed_same_losses_on_cpu():
    _, a = _tiny_run(seed=3, steps=20)
    _, b = _tiny_run(seed=3, steps=20)
    _, c = _tiny_run(seed=4, steps=20)
    assert a.train_loss == b.train_loss and a.val_loss == b.val_loss
    assert a.train_loss != c.train_loss


def test_evaluate_is_the_mean_nll_and_restores_the_mode():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5, context_length=8, d_model=8, n_layers=1, n_heads=1))
    with torch.no_grad():
        model.tok_emb.weight.zero_()  # tied: the head is the embedding, logits all zero => uniform
    model.train()
    assert evaluate(model, list(range(5)) * 20, context_length=8, num_batches=2) == pytest.approx(math.log(5))
    assert model.training


def test_history_plot():
    import matplotlib

    matplotlib.use("Agg")
    ax = History(steps=[0, 1], train_loss=[2.0, 1.0], val_loss=[2.1, 1.5], lr=[0.0, 1.0]).plot(label="x")
    assert len(ax.lines) == 2


def test_grad_accumulation_matches_one_big_batch():
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, 9, (600,), generator=g)
    results = []
    for accum in (1, 4):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=9, context_length=16, d_model=16, n_layers=1, n_heads=2))
        cfg = TrainConfig(steps=6, batch_size=8, context_length=16, lr=1e-2, min_lr=1e-3, warmup_steps=1,
                          eval_every=3, eval_batches=2, grad_accum=accum)
        results.append((train(model, (text[:400], text[400:]), cfg), model))  # the (train, val) form
    (h1, m1), (h4, m4) = results
    assert h4.val_loss == pytest.approx(h1.val_loss, rel=1e-5)
    for a, b in zip(m1.parameters(), m4.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="multiple of grad_accum"):
        TrainConfig(batch_size=10, grad_accum=4)


def test_history_metrics_and_quiet_by_default(capsys):
    _, history = _tiny_run(steps=20)
    assert history.val_perplexity == pytest.approx([math.exp(v) for v in history.val_loss])
    assert history.val_bits_per_char == pytest.approx([v / math.log(2) for v in history.val_loss])
    out, err = capsys.readouterr()
    assert out == "" and err == ""  # no progress bar when stderr is not a terminal


def test_evaluate_stream_scores_every_token_once():
    from lmcourse.metrics import mean_nll
    from lmcourse.train import evaluate_stream

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=9, context_length=16, d_model=16, n_layers=1, n_heads=2)).eval()
    ids = torch.randint(0, 9, (13,))
    with torch.no_grad():
        whole = mean_nll(model(ids[None, :-1]), ids[None, 1:]).item()
    assert evaluate_stream(model, ids, 16) == pytest.approx(whole, rel=1e-6)  # one window holds it all
    ids = torch.randint(0, 9, (101,))
    with torch.no_grad():  # stride = T: disjoint windows, the last one shifted back to end at the end
        chunks = [mean_nll(model(ids[None, s:s + 16]), ids[None, s + 1:s + 17]).item() * 16 for s in range(0, 96, 16)]
        last = torch.nn.functional.cross_entropy(model(ids[None, 84:100])[0], ids[85:101], reduction="none")
    expected = (sum(chunks) + last[12:].sum().item()) / 100  # targets 97..100 are new
    assert evaluate_stream(model, ids, 16, stride=16) == pytest.approx(expected, rel=1e-5)


def test_stream_token_nll_gives_each_token_its_own_loss():
    from lmcourse.train import evaluate_stream, stream_token_nll

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=9, context_length=16, d_model=16, n_layers=1, n_heads=2)).eval()
    ids = torch.randint(0, 9, (12,))
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(model(ids[None, :-1])[0], ids[1:], reduction="none")
    assert torch.allclose(stream_token_nll(model, ids, 16), direct, atol=1e-6)  # one window: token by token
    ids = torch.randint(0, 9, (60,))
    nll = stream_token_nll(model, ids, 16, stride=4)
    assert nll.shape == (59,) and torch.isfinite(nll).all()
    assert nll.mean().item() == pytest.approx(evaluate_stream(model, ids, 16, stride=4), rel=1e-6)
    with torch.no_grad():  # target ids[40] is scored by the window ids[24:40] (starts 0, 4, ..., 24 cover it last-new)
        logp = torch.log_softmax(model(ids[None, 24:40])[0, -1], -1)
    assert nll[39].item() == pytest.approx(-logp[ids[40]].item(), abs=1e-5)


def test_command_line_writes_weights_and_only_its_manifest_entry(tmp_path, capsys):
    import json

    from lmcourse.runs import load_pretrained, main

    (tmp_path / "manifest.json").write_text(json.dumps({"other": {"name": "other", "keep": 1}}))
    assert main(["--config", "tiny", "--steps", "6", "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["other"] == {"name": "other", "keep": 1}  # read-modify-write: others untouched
    entry = manifest["tiny"]
    assert entry["steps"] == 6 and entry["command"] == "python -m lmcourse train --config tiny --steps 6"
    model = load_pretrained(str(tmp_path / "tiny.pt"))
    assert model.num_params() == entry["parameters"] and 0 < entry["val_nats_per_char"] < 5
    assert (tmp_path / "tiny.state.pt").is_file()
    assert "step      6" in capsys.readouterr().out


@pytest.mark.slow  # two fresh Python processes that import torch
def test_python_m_lmcourse_train_runs_the_named_runs_command_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lmcourse", "train", "--config", "tiny", "--steps", "2",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tiny.pt").is_file() and "tiny: 16,192 parameters" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "lmcourse", "train", "--config", "nope"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "invalid choice: 'nope'" in bad.stderr
    listed = subprocess.run([sys.executable, "-m", "lmcourse", "train", "--list"], capture_output=True, text=True)
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert listed.returncode == 0 and names == ["tiny", "small", "lstm_char", "gpt_char", "gpt_char_untied", "mlm_char",
                                                "gpt_modern"]


def test_bench_train_reports_both_steps(capsys):
    import re

    from lmcourse.bench.train import main
    from lmcourse.runs import named_runs

    assert main(["--configs", "tiny", "--steps", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    peak = re.fullmatch(r"measured peak: ([\d.]+) GFLOP/s \(float32 matrix product\)", lines[1])
    assert peak, lines[1]
    assert lines[2].split() == ["config", "params", "tokens/step", "course", "tok/s", "MFU", "ref", "tok/s",
                                "ref", "MFU", "speed-up"]
    row = re.fullmatch(r"tiny +([\d,]+) +([\d,]+) +([\d,]+) +([\d.]+)% +([\d,]+) +([\d.]+)% +([\d.]+)x", lines[3])
    assert row, lines[3]  # the row of the one config, both steps measured
    params, tokens, course, mfu, ref, _, speedup = (float(g.replace(",", "")) for g in row.groups())
    spec = named_runs()["tiny"]
    assert params == GPT(spec.model).num_params()
    assert tokens == spec.train.batch_size * spec.train.context_length
    assert course > 0 and ref > 0
    assert speedup == pytest.approx(course / ref, abs=0.006)
    assert mfu == pytest.approx(100 * 6 * params * course / (float(peak.group(1)) * 1e9), rel=0.01, abs=0.06)


# ----------------------------------------------------------------------------------
# Adaptation (chapter 14): frozen parameters, extra validation texts, the "sft" objective


def test_extra_val_records_the_next_token_loss_of_other_texts():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, context_length=8, d_model=16, n_layers=1, n_heads=2))
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 11, (500,), generator=g), torch.randint(0, 5, (500,), generator=g)
    cfg = TrainConfig(steps=4, batch_size=4, context_length=8, warmup_steps=1, eval_every=2, eval_batches=2)
    hist = train(model, a, a, cfg, extra_val={"other": b})
    assert len(hist.extra["other"]) == len(hist.steps) == 3


def test_frozen_parameters_do_not_move():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, context_length=8, d_model=16, n_layers=1, n_heads=2))
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("tok_emb"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = torch.randint(0, 11, (300,), generator=torch.Generator().manual_seed(1))
    train(model, data, data, TrainConfig(steps=3, batch_size=4, context_length=8, warmup_steps=1, eval_every=3,
                                         eval_batches=1, lr=1e-2))
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"tok_emb.weight"}


def test_sft_objective_is_the_mean_nll_of_unmasked_targets():
    from lmcourse.objectives import Examples

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, context_length=8, d_model=16, n_layers=1, n_heads=2))
    g = torch.Generator().manual_seed(2)
    data = torch.randint(0, 11, (6, 2, 8), generator=g)
    data[:, 1, :3] = -100
    cfg = TrainConfig(steps=2, batch_size=3, context_length=8, warmup_steps=0, objective="sft")
    obj = Examples(cfg, data, 11)
    x, y = obj.sample(torch.Generator().manual_seed(0))
    logp = torch.log_softmax(model(x).double(), -1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
    expected = -(logp * (y != -100)).sum() / (y != -100).sum()
    torch.testing.assert_close(obj.loss(model, x, y).double(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, 2, T\)"):
        train(model, torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long), cfg)
    with pytest.raises(ValueError, match="reference model is for"):
        train(model, data, data, cfg, reference=model)
