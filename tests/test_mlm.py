"""Tests of lmcourse.mlm: BERT masking, the MLM loss, the bidirectional encoder, fill-mask."""

import json
import math

import pytest
import torch

from lmcourse import load_pretrained
from lmcourse.mlm import IGNORE_INDEX, MASK_TOKEN, evaluate_mlm, fill_mask, mask_tokenizer, mask_tokens, mlm_loss
from lmcourse.shipped import CHECKPOINT_DIR, sha256
from lmcourse.train import TrainConfig, train
from lmcourse.transformer import GPT, GPTConfig

TINY = GPTConfig(vocab_size=12, context_length=16, d_model=16, n_layers=2, n_heads=2, causal=False)


def MaskedLM(config):  # the encoder is the GPT class, bidirectional
    return GPT(config)
V, MASK, SPECIALS = 20, 0, (0, 1)  # id 0 is [MASK], id 1 another special (say [PAD])


def _batch(seed=0, shape=(400, 250)):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, shape, generator=g)
    ids[:, ::10] = 1  # every tenth position is the special id 1
    return ids


def _draw(ids, seed=1, p=0.15):
    g = torch.Generator().manual_seed(seed)
    return mask_tokens(ids, mask_token_id=MASK, vocab_size=V, mlm_probability=p, special_token_ids=SPECIALS,
                       generator=g)


def test_label_convention_and_unchosen_inputs_unchanged():
    ids = _batch()
    inputs, labels = _draw(ids)
    chosen = labels != IGNORE_INDEX
    assert (labels[chosen] == ids[chosen]).all()  # the original id where chosen
    assert (labels[~chosen] == -100).all()  # -100 (ignore_index) everywhere else
    assert (inputs[~chosen] == ids[~chosen]).all()  # unchosen positions are untouched
    assert inputs.shape == ids.shape and inputs.dtype == torch.long
    assert not chosen[ids == 1].any()  # special tokens are never chosen
    assert not (inputs[chosen] == 1).any()  # ... and never drawn as a random replacement


def test_proportions_match_bert_within_binomial_error():
    """15 % chosen; of those 80 % [MASK], 10 % random, 10 % kept, each within 5 standard errors.

    A random replacement is uniform over the Vn = V - 2 non-special ids, so it equals
    the original with probability 1/Vn: a chosen position shows its original id with
    probability 0.1 + 0.1/Vn, and some other non-mask id with probability 0.1 (1 - 1/Vn).
    """
    ids = _batch()
    inputs, labels = _draw(ids)
    eligible = ids != 1
    chosen = labels != IGNORE_INDEX
    n, k = eligible.sum().item(), chosen.sum().item()  # 90 000 eligible, ~13 500 chosen

    def within(count, total, p):
        se = math.sqrt(p * (1 - p) / total)
        return abs(count / total - p) < 5 * se

    vn = V - len(SPECIALS)
    assert within(k, n, 0.15), k / n
    shown = inputs[chosen]
    assert within((shown == MASK).sum().item(), k, 0.8)
    assert within((shown == ids[chosen]).sum().item(), k, 0.1 + 0.1 / vn)
    assert within(((shown != MASK) & (shown != ids[chosen])).sum().item(), k, 0.1 * (1 - 1 / vn))
    # the replacements cover every non-special id and no special one
    replaced = shown[(shown != MASK) & (shown != ids[chosen])]
    assert set(replaced.tolist()) == set(range(2, V))


def test_deterministic_for_a_generator():
    ids = _batch(shape=(8, 64))
    a, b, c = _draw(ids, seed=3), _draw(ids, seed=3), _draw(ids, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_probability_extremes_and_errors():
    ids = _batch(shape=(4, 30))
    _, labels = _draw(ids, p=0.0)
    assert (labels == IGNORE_INDEX).all()
    inputs, labels = _draw(ids, p=1.0)
    assert torch.equal(labels != IGNORE_INDEX, ids != 1)  # every non-special position
    with pytest.raises(ValueError, match="mlm_probability"):
        _draw(ids, p=1.5)
    with pytest.raises(ValueError, match="ids must lie"):
        mask_tokens(ids + V, mask_token_id=MASK, vocab_size=V)
    with pytest.raises(ValueError, match="torch.long"):
        mask_tokens(ids.float(), mask_token_id=MASK, vocab_size=V)


def test_mlm_loss_is_mean_over_labelled_positions_only():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, V, generator=g, dtype=torch.float64)
    labels = torch.full((3, 7), IGNORE_INDEX)
    labels[0, 2], labels[1, 5], labels[2, 0] = 4, 9, 13
    logp = logits.log_softmax(-1)
    expected = -(logp[0, 2, 4] + logp[1, 5, 9] + logp[2, 0, 13]) / 3  # hand-written reference
    assert torch.allclose(mlm_loss(logits, labels), expected)
    other = logits.clone()
    other[labels == IGNORE_INDEX] = 100.0  # unlabelled positions do not matter
    assert torch.allclose(mlm_loss(other, labels), expected)
    with pytest.raises(ValueError, match="do not match"):
        mlm_loss(logits, labels[:, :-1])


def test_encoder_sees_both_sides():
    torch.manual_seed(0)
    model = MaskedLM(TINY).eval()
    ids = torch.randint(0, 12, (1, 10))
    changed = ids.clone()
    changed[0, 7] = (ids[0, 7] + 1) % 12
    diff = (model(ids) - model(changed)).abs().amax(-1)[0]  # (T,)
    assert (diff[:7] > 0).all()  # earlier positions react to a later token: not causal
    maps = model.attention_maps(ids)
    assert len(maps) == TINY.n_layers and maps[0].shape == (1, 2, 10, 10)
    assert torch.allclose(maps[0].sum(-1), torch.ones(1, 2, 10))
    assert (maps[0].triu(1) > 0).any()  # weight above the diagonal: the future is visible


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rope", "alibi"])
def test_encoder_is_the_gpt_with_the_mask_removed(positional):
    """The same weights in a causal GPT: with its blocks made bidirectional, the same logits."""
    cfg = GPTConfig(**{**TINY.__dict__, "positional": positional})
    torch.manual_seed(0)
    enc = MaskedLM(cfg).eval()
    gpt = GPT(GPTConfig(**{**cfg.__dict__, "causal": True})).eval()
    gpt.load_state_dict(enc.state_dict())  # the same parameters, name for name
    ids = torch.randint(0, 12, (2, 9))
    assert not torch.allclose(enc(ids), gpt(ids), atol=1e-3)  # causal differs
    for block in gpt.blocks:
        block.attn.causal = False
    assert torch.allclose(enc(ids), gpt(ids), atol=1e-6)


def test_head_is_tied_and_params_counted_once():
    model = MaskedLM(TINY)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("head") for n in names)
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="bidirectional"):
        from lmcourse.generation import KVCache

        model(torch.zeros(1, 2, dtype=torch.long), cache=KVCache.for_model(model, 1))


def test_engine_lowers_the_mlm_loss():
    torch.manual_seed(0)
    model = MaskedLM(GPTConfig(vocab_size=12, context_length=16, d_model=32, n_layers=1, n_heads=2, causal=False))
    text = torch.arange(1, 12).repeat(40)  # a periodic sequence: masked ids are easy to infer
    cfg = TrainConfig(steps=80, batch_size=16, context_length=16, warmup_steps=5, lr=2e-2, min_lr=2e-3,
                      eval_every=40, eval_batches=2, objective="mlm", mask_token_id=0)
    hist = train(model, text, text, cfg)
    assert hist.val_loss[-1] < hist.val_loss[0] - 0.5  # from about ln(11) = 2.4 nats down


@pytest.fixture(scope="module")
def shipped():
    return load_pretrained("mlm_char"), mask_tokenizer()


def test_tokenizer_puts_mask_first_and_shifts_characters():
    from lmcourse.tokenization import shakespeare_char_tokenizer

    tok, plain = mask_tokenizer(), shakespeare_char_tokenizer()
    assert tok.token_to_id(MASK_TOKEN) == 0 and tok.vocab_size == plain.vocab_size + 1
    assert tok.encode("to be") == [i + 1 for i in plain.encode("to be")]


def test_fill_mask_with_the_shipped_model(shipped):
    model, tok = shipped
    out = fill_mask(model, tok, "To be, or not to b[MASK], that is the question.", top_k=5)
    assert len(out) == 1 and len(out[0]) == 5
    probs = [p for _, p in out[0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    assert out[0][0][0] == "e"
    two = fill_mask(model, tok, "Wh[MASK]re is th[MASK] king?", top_k=3)
    assert len(two) == 2
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        fill_mask(model, tok, "no mask here")


def test_shipped_checkpoint_matches_manifest(shipped):
    model, tok = shipped
    entry = json.loads((CHECKPOINT_DIR / "manifest.json").read_text())["mlm_char"]
    assert entry["sha256"] == sha256(CHECKPOINT_DIR / entry["file"])
    assert entry["parameters"] == model.num_params()
    assert entry["config"] == model.config.__dict__ and not model.config.causal
    # one small held-out batch: far better than the 1/75 of guessing
    from lmcourse.data import load_shakespeare

    val = tok.encode(load_shakespeare("val")[:20000])
    res = evaluate_mlm(model, val, mask_token_id=0, batch_size=8, num_batches=2)
    assert res["accuracy"] > 0.3 and res["loss"] < 2.5
