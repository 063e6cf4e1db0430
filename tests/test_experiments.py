"""Chapters 4, 6, 7 and 8's experiments: post-norm blocks, the gradient norm a step records, the stored runs."""

import json
import math
import statistics
from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F

from lmcourse.experiments.comparisons import (
    BPE_MODEL,
    CHAR_MODEL,
    EXPERIMENTS,
    EXPERIMENTS_FILE,
    Arm,
    Data,
    arms,
    build_model,
    dumps,
    load_data,
    load_results,
    main,
    run_arm,
    spread,
)
from lmcourse.train import TrainConfig, Trainer
from lmcourse.transformer import GPT, GPTConfig

SMALL = dict(vocab_size=11, context_length=8, d_model=16, n_layers=2, n_heads=4)


def _ids(vocab, shape, seed=0):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------- post-norm


def test_post_norm_is_layernorm_after_each_residual_add():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL, norm_position="post")).double().eval()
    ids = _ids(11, (2, 8))
    with torch.no_grad():
        x = model.tok_emb(ids) + model.pos_emb(8)
        for b in model.blocks:  # x = LN(x + Attn(x)); x = LN(x + MLP(x)), written with F.layer_norm
            x = F.layer_norm(x + b.attn(x), (16,), b.ln1.weight, b.ln1.bias)
            x = F.layer_norm(x + b.mlp(x), (16,), b.ln2.weight, b.ln2.bias)
        expected = x @ model.tok_emb.weight.T  # no final norm: the last block ends in one
        got = model(ids)
    assert isinstance(model.ln_f, torch.nn.Identity)
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)
    # a pre-norm model with the same weights computes something else
    pre = GPT(GPTConfig(**SMALL)).double().eval()
    pre.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.allclose(pre(ids), got, atol=1e-3)


def test_post_norm_stream_is_normalised_and_causal():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL, norm_position="post")).eval()
    ids = _ids(11, (1, 8))
    h = model.tok_emb(ids) + model.pos_emb(8)
    for b in model.blocks:
        h, _ = b(h)
    # with the initial gains (1) and biases (0) every position is mean 0, variance 1
    assert torch.allclose(h.mean(-1), torch.zeros(1, 8), atol=1e-5)
    assert torch.allclose(h.var(-1, unbiased=False), torch.ones(1, 8), atol=1e-3)
    changed = ids.clone()
    changed[0, 5] = (ids[0, 5] + 1) % 11
    with torch.no_grad():
        a, c = model(ids), model(changed)
    assert torch.equal(a[0, :5], c[0, :5]) and not torch.allclose(a[0, 5:], c[0, 5:])


def test_norm_position_is_validated():
    with pytest.raises(ValueError, match="norm_position"):
        GPTConfig(**SMALL, norm_position="middle")
    assert GPTConfig(**SMALL).norm_position == "pre"


# ---------------------------------------------------------------------------------- gradient norm


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_trainer_records_the_global_norm_before_clipping(clip):
    text = _ids(11, (600,), seed=1)
    cfg = TrainConfig(steps=3, batch_size=4, context_length=8, warmup_steps=0, grad_clip=clip, eval_batches=1)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL))
    reference = GPT(GPTConfig(**SMALL))
    reference.load_state_dict(model.state_dict())
    trainer = Trainer(model, text, cfg, device="cpu")
    x, y = trainer.objective.sample(torch.Generator().manual_seed(cfg.seed))  # the first batch the step draws
    trainer.step(0)
    F.cross_entropy(reference(x).flatten(0, 1), y.flatten()).backward()
    expected = math.sqrt(sum(float(p.grad.double().square().sum()) for p in reference.parameters()))
    assert trainer.grad_norm.item() == pytest.approx(expected, rel=1e-5)
    if clip:  # clipped: the norm recorded is the one before clipping, far above the clip
        assert expected > 10 * clip


# ---------------------------------------------------------------------------------- the experiments


def test_spread_against_statistics_and_bad_input():
    values = [2.1, 2.4, 2.2]
    s = spread(values)
    assert s["mean"] == pytest.approx(statistics.fmean(values), abs=1e-4)
    assert s["std"] == pytest.approx(statistics.stdev(values), abs=1e-4)
    assert (s["min"], s["max"]) == (2.1, 2.4)
    assert spread([3.0])["std"] == 0.0
    with pytest.raises(ValueError, match="finite"):
        spread([1.0, float("nan")])
    with pytest.raises(ValueError, match="finite"):
        spread([])


def test_arms_change_only_what_their_names_say():
    for name in EXPERIMENTS:
        names = [a.name for a in arms(name)]
        assert len(set(names)) == len(names) > 1
    training = arms("training")
    assert all(a.model == CHAR_MODEL for a in training)
    assert [a.train.lr for a in training[:4]] == [1e-3, 3e-3, 1e-2, 3e-2]
    assert all(a.train.min_lr == pytest.approx(a.train.lr / 10) for a in training)
    no_warmup, no_clip = training[4], training[5]
    assert no_warmup.train == replace(training[2].train, warmup_steps=0)
    assert no_clip.train == replace(training[2].train, grad_clip=0.0)
    by_name = {a.name: a for a in training}
    for lr in ("1e-03", "3e-03", "1e-02", "3e-02"):  # the sweep again, cold: only the warmup differs
        assert by_name[f"lr {lr}, no warmup"].train == replace(by_name[f"lr {lr}"].train, warmup_steps=0)
    assert by_name["lr 1e-02, 5-step warmup"].train == replace(training[2].train, warmup_steps=5)
    long_warm, long_cold = by_name["lr 1e-02, 1500 steps"], by_name["lr 1e-02, 1500 steps, no warmup"]
    assert long_warm.train == replace(training[2].train, steps=1500, eval_every=1500)
    assert long_cold.train == replace(long_warm.train, warmup_steps=0)
    norms = arms("norms")
    assert {a.model.norm_position for a in norms} == {"pre", "post"}
    by_name = {a.name: a for a in norms}
    for name in ("pre-norm, lr 3e-3, warmup 100", "post-norm, lr 3e-3, warmup 100", "post-norm, lr 3e-3, warmup 200"):
        base = by_name[name.split(", warmup")[0]]
        assert by_name[name].model == base.model
        assert by_name[name].train == replace(base.train, warmup_steps=int(name.rsplit(" ", 1)[1]))
    kv = arms("kv_heads")  # only the key/value heads, or the depth, change; the training never does
    assert all(a.train == kv[0].train and a.train.steps == 2000 for a in kv)
    assert [a.model.kv_heads for a in kv] == [4, 2, 1, 4, 4]
    assert [a.model.n_layers for a in kv] == [4, 4, 4, 2, 1]
    assert all(replace(a.model, n_kv_heads=None, n_layers=4) == CHAR_MODEL for a in kv)
    # the fewer-layer arms hold the same cache as the shared-head arms: layers x key/value heads
    assert [a.model.n_layers * a.model.kv_heads for a in kv][1:] == [8, 4, 8, 4]
    tying = arms("tying")  # the same three at lr 1e-2
    for low, high in zip(tying[:3], tying[3:6], strict=True):
        assert high.model == low.model and high.train == replace(low.train, lr=1e-2, min_lr=1e-3)
    # the tied baseline with an output bias, and with its input scaled: only the build differs
    assert [(a.model, a.train, a.variant) for a in tying[6:]] == [
        (tying[0].model, tying[0].train, "output bias"), (tying[0].model, tying[0].train, "input x sqrt(D)")]
    assert {a.variant for a in tying[:6]} == {"plain"}
    # equal parameters: the wider tied model has within 3% of the untied model's parameters
    with torch.device("meta"):
        counts = [GPT(a.model).num_params() for a in arms("tying")]
    assert counts[0] + BPE_MODEL.vocab_size * BPE_MODEL.d_model == counts[1]
    assert abs(counts[2] / counts[1] - 1) < 0.03


def test_run_arm_logs_every_step():
    text = torch.tensor(_ids(11, (3000,), seed=2).tolist())
    data = Data(text[:2500], text[2500:], 1.0)
    cfg = TrainConfig(steps=6, batch_size=4, context_length=8, lr=1e-2, min_lr=1e-3, warmup_steps=2,
                      eval_every=6, eval_batches=1, grad_clip=0.5)
    out = run_arm(Arm("tiny", GPTConfig(**SMALL), cfg), seed=1, data=data)
    assert len(out["loss"]) == len(out["grad_norm"]) == 6 and out["seed"] == 1
    assert all(g > 0 for g in out["grad_norm"])
    assert out["val_bits_per_char"] == pytest.approx(out["val_nats_per_token"] / math.log(2), abs=2e-4)
    assert out["loss"][0] == pytest.approx(math.log(11), abs=0.2)  # the untrained model is about uniform
    again = run_arm(Arm("tiny", GPTConfig(**SMALL), cfg), seed=1, data=data)
    assert again["loss"] == out["loss"]  # seeded: the same run twice


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="no experiment 'nope'"):
        arms("nope")
    with pytest.raises(TypeError, match="Arm"):
        run_arm("tying", 0, Data(torch.zeros(10, dtype=torch.long), torch.zeros(10, dtype=torch.long), 1.0))
    with pytest.raises(ValueError, match="tokenizer"):
        Arm("x", CHAR_MODEL, TrainConfig(), tokenizer="words")
    with pytest.raises(ValueError, match="eval_chars"):
        load_data("char", 1)
    data = Data(torch.tensor([0, 80, 3] * 50), torch.tensor([0, 1, 2] * 20), 1.0)
    with pytest.raises(ValueError, match="vocab_size"):
        run_arm(Arm("small vocabulary", CHAR_MODEL, TrainConfig(steps=2, warmup_steps=0)), 0, data)
    with pytest.raises(SystemExit):
        main(["training", "--seeds", "0"])


def test_load_results_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m lmcourse experiments tying"):
        load_results("tying", tmp_path / "none.json")


def test_dumps_round_trips_and_keeps_lists_on_one_line():
    obj = {"a": [1.5, 2, -3e-05], "b": {"names": ["x", "y"], "empty": []}}
    text = dumps(obj)
    assert json.loads(text) == obj and '"a": [1.5, 2, -3e-05]' in text


def test_stored_results_are_the_arms_of_the_code():
    stored = json.loads(EXPERIMENTS_FILE.read_text())
    for name in EXPERIMENTS:
        entry = stored[name]
        assert entry["command"].startswith(f"python -m lmcourse experiments {name} --seeds 3")
        assert [a["name"] for a in entry["arms"]] == [a.name for a in arms(name)]
        for saved, arm in zip(entry["arms"], arms(name), strict=True):
            model, train = asdict(arm.model), asdict(arm.train)
            assert {k: model[k] for k in saved["model"]} == saved["model"]
            assert {k: train[k] for k in saved["train"]} == saved["train"]
            assert [r["seed"] for r in saved["runs"]] == [0, 1, 2]
            assert all(len(r["loss"]) == arm.train.steps for r in saved["runs"])
            values = [r["val_nats_per_token"] for r in saved["runs"]]
            assert saved["val_nats_per_token"]["mean"] == pytest.approx(statistics.fmean(values), abs=1e-4)


@pytest.mark.slow
def test_command_line_writes_its_entry(tmp_path):
    out = tmp_path / "experiments.json"
    out.write_text(json.dumps({"other": {"kept": True}}))
    assert main(["norms", "--seeds", "1", "--steps", "2", "--eval-chars", "300", "--out", str(out)]) == 0
    stored = json.loads(out.read_text())
    assert stored["other"] == {"kept": True}
    entry = stored["norms"]
    assert entry["command"] == "python -m lmcourse experiments norms --seeds 1 --eval-chars 300 --steps 2"
    assert len(entry["arms"]) == len(arms("norms")) and all(len(a["runs"]) == 1 for a in entry["arms"])


def test_the_variants_start_from_the_plain_model_s_weights():
    cfg = GPTConfig(**SMALL)
    base = Arm("plain", cfg, TrainConfig())
    torch.manual_seed(0)
    plain = build_model(base)
    built = {}
    for variant in ("output bias", "input x sqrt(D)"):
        torch.manual_seed(0)
        built[variant] = build_model(replace(base, variant=variant))
    ids = _ids(11, (2, 8))
    for variant, model in built.items():  # same initial weights as the plain model
        shared = {k: v for k, v in model.state_dict().items() if k != "out_bias"}
        assert all(torch.equal(v, plain.state_dict()[k]) for k, v in shared.items()), variant
    biased = built["output bias"]
    assert torch.equal(biased(ids), plain(ids))  # a zero bias at the start
    with torch.no_grad():
        biased.out_bias[3] = 2.0
    assert torch.allclose(biased(ids)[..., 3], plain(ids)[..., 3] + 2.0)
    assert biased.num_params() == plain.num_params() + 11
    scaled = built["input x sqrt(D)"]
    assert scaled.tok_emb.weight is scaled.tok_emb.weight and scaled.head is None  # still tied, one matrix
    assert torch.allclose(scaled.tok_emb(ids), plain.tok_emb(ids) * 4.0)  # sqrt(16)
    with pytest.raises(ValueError, match="variant"):
        Arm("x", cfg, TrainConfig(), variant="wide")


def test_run_arm_records_the_output_rows_geometry():
    text = torch.tensor(([0] * 200 + [1] * 150 + [2, 3, 4] * 60 + [5, 6]) * 3)
    data = Data(text[:1200], text[1200:], 1.0)
    cfg = TrainConfig(steps=2, batch_size=2, context_length=8, warmup_steps=1, eval_every=2, eval_batches=1)
    out = run_arm(Arm("tiny", GPTConfig(**SMALL), cfg), seed=0, data=data)
    # tokens 5, 6 and the never-seen 7..10 are rare (fewer than 100 times)
    assert out["rare_tokens"] == 6 and -1 <= out["rare_cosine"] <= 1 and -1 <= out["frequent_cosine"] <= 1
