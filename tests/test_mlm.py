"""Tests of lmcourse.mlm: BERT masking, the MLM loss, the bidirectional encoder, fill-mask."""

import json
import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmcourse import load_pretrained
from lmcourse.mlm import (
    IGNORE_INDEX,
    MASK_TOKEN,
    blank_log_probs,
    count_fill_in,
    evaluate_mlm,
    fill_mask,
    mask_tokenizer,
    mask_tokens,
    mirror_gap,
    mlm_loss,
)
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
    assert GPTConfig(**entry["config"]) == model.config and not model.config.causal  # new fields: defaults
    # one small held-out batch: far better than the 1/75 of guessing
    from lmcourse.data import load_shakespeare

    val = tok.encode(load_shakespeare("val")[:20000])
    res = evaluate_mlm(model, val, mask_token_id=0, batch_size=8, num_batches=2)
    assert res["accuracy"] > 0.3 and res["loss"] < 2.5
    # the headline: accuracy where the input shows [MASK] (the answer is hidden)
    assert res["mask_only_accuracy"] > 0.42 and entry["val_mask_only_accuracy"] >= 0.42
    assert entry["val_kept_accuracy"] > entry["val_masked_accuracy"] > entry["val_mask_only_accuracy"]
    assert entry["val_mask_positions"] > 5000  # enough blanks for a standard error under 0.01


def _windows_of_val(tok, n=8, T=64, seed=5):
    from lmcourse.data import load_shakespeare, random_windows

    val = torch.tensor(tok.encode(load_shakespeare("val")[:20000]))
    return random_windows(val, n, T, generator=torch.Generator().manual_seed(seed))[0]


def test_shipped_encoder_tells_left_from_right(shipped):
    """With no causal mask, a symmetric position signal (ALiBi's -m|i-j|) makes an encoder
    reversal-equivariant: f(flip x) = flip f(x). The shipped encoder must not be."""
    model, tok = shipped
    x = _windows_of_val(tok, T=model.config.context_length)
    torch.manual_seed(0)
    alibi = GPT(GPTConfig(**{**model.config.__dict__, "positional": "alibi"})).eval()
    assert mirror_gap(alibi, x) < 1e-4  # the reference: the symmetric scheme, same shape
    gap = mirror_gap(model, x)
    with torch.no_grad():  # the gap, written out
        assert gap == pytest.approx((model(x.flip(1)) - model(x).flip(1)).abs().max().item(), abs=1e-5)
    assert gap > 1.0  # logits, not rounding
    # by hand: the blank in "I s_y" and in the same text written backwards ("y_s I")
    text = "Out, damned spot! out, I s[MASK]y!"
    left, right = text.split(MASK_TOKEN)
    mirrored = right[::-1] + MASK_TOKEN + left[::-1]
    assert mirrored == "!y[MASK]s I ,tuo !tops denmad ,tuO"
    V = model.config.vocab_size
    for m, symmetric in [(alibi, True), (model, False)]:
        fwd, back = (dict(fill_mask(m, tok, t, top_k=V)[0]) for t in (text, mirrored))
        tv = 0.5 * sum(abs(fwd[c] - back[c]) for c in fwd)
        assert (tv < 1e-5) if symmetric else (tv > 0.3)
    assert max(fwd, key=fwd.get) == "a"  # the shipped encoder reads "say"


@pytest.mark.parametrize("positional, symmetric", [("alibi", True), ("rope", False), ("learned", False)])
def test_mirror_gap_of_each_position_scheme_with_large_weights(positional, symmetric):
    """Large random weights (sharp attention): ALiBi stays exactly symmetric, the others do not."""
    torch.manual_seed(0)
    enc = GPT(GPTConfig(**{**TINY.__dict__, "positional": positional})).double().eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0.0, 0.5)
    x = torch.randint(0, 12, (4, 16), generator=torch.Generator().manual_seed(1))
    gap = mirror_gap(enc, x)
    assert (gap < 1e-9) if symmetric else (gap > 1e-2)
    with pytest.raises(ValueError, match="ids must be"):
        mirror_gap(enc, x.float())


class _CopyModel(nn.Module):
    """Predicts the token it is shown: right on kept positions, wrong on [MASK] and random ones."""

    def __init__(self, vocab_size=V, context_length=16):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab_size, context_length=context_length)
        self.tok_emb = nn.Embedding(vocab_size, 1)

    def forward(self, ids):
        return 10.0 * F.one_hot(ids, self.config.vocab_size).float()  # (B, T, V)


def test_evaluate_mlm_splits_accuracy_by_what_the_position_shows():
    ids = torch.randint(2, V, (5000,), generator=torch.Generator().manual_seed(0))
    res = evaluate_mlm(_CopyModel(), ids, mask_token_id=MASK, num_batches=40, batch_size=16)
    assert res["kept_accuracy"] == 1.0  # the answer is in the input
    assert res["mask_only_accuracy"] == 0.0 == res["random_accuracy"]  # a copy cannot fill a blank
    assert res["mask_accuracy"] == res["mask_only_accuracy"]  # the old name
    # accuracy over all chosen positions = the share kept: 0.1 + 0.1 / (V - 1) in expectation
    n, p = res["positions"], 0.1 + 0.1 / (V - 1)
    assert abs(res["accuracy"] - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert abs(res["mask_positions"] / n - 0.8) < 5 * math.sqrt(0.16 / n)
    with pytest.raises(ValueError, match="num_batches"):
        evaluate_mlm(_CopyModel(), ids, mask_token_id=MASK, num_batches=0)


def _tiny(causal, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY.__dict__, "causal": causal})).double().eval()


def test_blank_log_probs_against_one_window_at_a_time():
    ids = torch.randint(1, 12, (60,), generator=torch.Generator().manual_seed(0))
    T, pos = TINY.context_length, torch.tensor([16, 30, 59, 17])
    gpt, enc = _tiny(True), _tiny(False)
    with torch.no_grad():
        # causal: the T tokens before p; the last logits predict ids[p]
        lp, pred = blank_log_probs(gpt, ids, pos)
        for i, p in enumerate(pos.tolist()):
            ref = gpt(ids[None, p - T:p])[0, -1].log_softmax(-1)
            assert lp[i].item() == pytest.approx(ref[ids[p]].item(), abs=1e-12) and pred[i] == ref.argmax()
        # masked, both sides: p in the middle of its window, moved inwards at the end of ids
        lp, pred = blank_log_probs(enc, ids, pos, mask_token_id=0)
        for i, p in enumerate(pos.tolist()):
            s = min(max(p - T // 2, 0), len(ids) - T)
            w = ids[s:s + T].clone()
            w[p - s] = 0
            ref = enc(w[None])[0, p - s].log_softmax(-1)
            assert lp[i].item() == pytest.approx(ref[ids[p]].item(), abs=1e-12) and pred[i] == ref.argmax()
        # masked, left only: the window ends with the blank
        lp, _ = blank_log_probs(enc, ids, pos, mask_token_id=0, side="left", batch_size=1)
        for i, p in enumerate(pos.tolist()):
            w = ids[p - T + 1:p + 1].clone()
            w[-1] = 0
            assert lp[i].item() == pytest.approx(enc(w[None])[0, -1].log_softmax(-1)[ids[p]].item(), abs=1e-12)


def test_blank_log_probs_sees_what_it_should():
    ids = torch.randint(1, 12, (60,), generator=torch.Generator().manual_seed(0))
    p = torch.tensor([30])
    gpt, enc = _tiny(True), _tiny(False)
    later = ids.clone()
    later[31] = ids[31] % 11 + 1  # a different token just after the blank
    hidden = ids.clone()
    hidden[30] = ids[30] % 11 + 1  # a different token *at* the blank
    # the GPT and the left-only encoder ignore the right side; the encoder with both sides does not
    assert torch.equal(blank_log_probs(gpt, ids, p)[0], blank_log_probs(gpt, later, p)[0])
    left = {"mask_token_id": 0, "side": "left"}
    assert torch.equal(blank_log_probs(enc, ids, p, **left)[0], blank_log_probs(enc, later, p, **left)[0])
    assert not torch.equal(blank_log_probs(enc, ids, p, mask_token_id=0)[0],
                           blank_log_probs(enc, later, p, mask_token_id=0)[0])
    # the token at the blank is never seen: the same guess whatever it was
    guesses = [blank_log_probs(enc, x, p, mask_token_id=0)[1] for x in (ids, hidden)]
    assert torch.equal(*guesses)
    with pytest.raises(ValueError, match="mask_token_id"):
        blank_log_probs(gpt, ids, p, mask_token_id=0)
    with pytest.raises(ValueError, match="mask_token_id"):
        blank_log_probs(enc, ids, p)
    with pytest.raises(ValueError, match="positions must lie"):
        blank_log_probs(gpt, ids, torch.tensor([5]))  # fewer than T tokens before it
    with pytest.raises(ValueError, match="side"):
        blank_log_probs(enc, ids, p, mask_token_id=0, side="right")


def _count_fill_in_reference(train, ids, positions, widths):
    """Counter over every position of train, in plain Python: the independent reference."""
    train, ids = train.tolist(), ids.tolist()
    fallback = Counter(train).most_common()
    fallback = min(t for t, c in fallback if c == fallback[0][1])
    out = []
    for p in positions.tolist():
        guess = fallback
        for w in sorted(widths, reverse=True):
            if p < w or p + w >= len(ids):
                continue
            ctx = (tuple(ids[p - w:p]), tuple(ids[p + 1:p + 1 + w]))
            c = Counter(train[j] for j in range(w, len(train) - w)
                        if (tuple(train[j - w:j]), tuple(train[j + 1:j + 1 + w])) == ctx)
            if c:
                top = max(c.values())
                guess = min(t for t, n in c.items() if n == top)
                break
        out.append(guess)
    return torch.tensor(out)


@pytest.mark.parametrize("widths", [(1,), (2, 1), (3, 2, 1)])
def test_count_fill_in_matches_a_counter_reference(widths):
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 4, (3000,), generator=g)  # a small alphabet: contexts recur, ties happen
    ids = torch.randint(0, 5, (300,), generator=g)  # id 4 never occurs in train: unseen contexts back off
    positions = torch.arange(300)
    got = count_fill_in(train, ids, positions, widths)
    assert torch.equal(got, _count_fill_in_reference(train, ids, positions, widths))


def test_count_fill_in_reads_both_sides_and_rejects_bad_input():
    train = torch.tensor([5, 1, 6, 5, 2, 7] * 20)  # 5 _ 6 is always 1, 5 _ 7 always 2
    ids = torch.tensor([5, 0, 6, 5, 0, 7])
    assert count_fill_in(train, ids, [1, 4], widths=(1,)).tolist() == [1, 2]
    for bad in ([], [6], [-1]):
        with pytest.raises(ValueError, match="positions"):
            count_fill_in(train, ids, bad)
    with pytest.raises(ValueError, match="widths"):
        count_fill_in(train, ids, [1], widths=(0,))
