"""The LSTM chapter's package code, checked against torch.nn.LSTM in float64."""

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lmcourse import load_pretrained
from lmcourse.lstm import (
    LSTMLM,
    LSTMCell,
    LSTMConfig,
    ScratchLSTM,
    detach_state,
    evaluate,
    generate,
    gru_cell,
    lstm_cell,
    num_params,
    rnn_cell,
    state_gradient_norms,
    stream_nll,
)
from lmcourse.shipped import CHECKPOINT_DIR, save_weights, sha256
from lmcourse.train import TrainConfig, train

PRETRAINED = "lstm_char"


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_cell_equals_nn_lstmcell_float64():
    torch.manual_seed(0)
    ref = nn.LSTMCell(5, 7).double()
    ours = LSTMCell(5, 7).double()
    ours.load_state_dict(ref.state_dict())  # same names and layout
    g = _gen()
    x = torch.randn(3, 5, generator=g, dtype=torch.float64)
    h = torch.randn(3, 7, generator=g, dtype=torch.float64)
    c = torch.randn(3, 7, generator=g, dtype=torch.float64)
    h_ref, c_ref = ref(x, (h, c))
    h_ours, c_ours = ours(x, (h, c))
    torch.testing.assert_close(h_ours, h_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_ours, c_ref, rtol=0, atol=1e-12)


def test_cell_gate_equations_by_hand():
    # One hidden unit, zero weights: every gate is sigmoid(b) or tanh(b).
    b = torch.tensor([0.0, 1.0, 0.5, -1.0], dtype=torch.float64)  # i, f, g, o
    z = torch.zeros
    state = (z(1, 1, dtype=torch.float64), torch.full((1, 1), 2.0, dtype=torch.float64))
    h, c = lstm_cell(z(1, 1, dtype=torch.float64), state,
                     z(4, 1, dtype=torch.float64), z(4, 1, dtype=torch.float64), b, z(4, dtype=torch.float64))
    s = torch.sigmoid
    c_expected = s(b[1]) * 2.0 + s(b[0]) * torch.tanh(b[2])
    assert torch.isclose(c[0, 0], c_expected)
    assert torch.isclose(h[0, 0], s(b[3]) * torch.tanh(c_expected))


@pytest.mark.parametrize("num_layers", [1, 3])
def test_scratch_lstm_equals_nn_lstm_float64(num_layers):
    torch.manual_seed(0)
    ref = nn.LSTM(4, 6, num_layers, batch_first=True).double()
    ours = ScratchLSTM(4, 6, num_layers).double()
    ours.load_state_dict(ref.state_dict())
    g = _gen(1)
    x = torch.randn(2, 9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(num_layers, 2, 6, generator=g, dtype=torch.float64)
    c0 = torch.randn(num_layers, 2, 6, generator=g, dtype=torch.float64)
    out_ref, (h_ref, c_ref) = ref(x, (h0, c0))
    out, (h, c) = ours(x, (h0, c0))
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-12)
    # Gradients agree too: w.r.t. the input and every weight.
    (grad_x_ref,) = torch.autograd.grad(out_ref.sum() + c_ref.sum(), x)
    (grad_x,) = torch.autograd.grad(out.sum() + c.sum(), x)
    torch.testing.assert_close(grad_x, grad_x_ref, rtol=0, atol=1e-12)
    ref.zero_grad()
    ours.zero_grad()
    ref(x, (h0, c0))[0].pow(2).sum().backward()
    ours(x, (h0, c0))[0].pow(2).sum().backward()
    for (name, p_ref), p in zip(ref.named_parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=0, atol=1e-10, msg=name)


def test_lm_scratch_and_nn_lstm_give_the_same_logits():
    cfg = LSTMConfig(vocab_size=11, embed_dim=6, hidden_size=8, num_layers=2, dropout=0.3)
    torch.manual_seed(0)
    fast = LSTMLM(cfg).double().eval()
    slow = LSTMLM(LSTMConfig(**{**cfg.__dict__, "scratch": True})).double().eval()
    slow.load_state_dict(fast.state_dict())
    idx = torch.randint(0, 11, (3, 7), generator=_gen())
    logits_fast, (h_f, c_f) = fast(idx)
    logits_slow, (h_s, c_s) = slow(idx)
    assert logits_fast.shape == (3, 7, 11)
    torch.testing.assert_close(logits_slow, logits_fast, rtol=0, atol=1e-12)
    torch.testing.assert_close(h_s, h_f, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_s, c_f, rtol=0, atol=1e-12)


def test_carried_state_equals_one_long_pass():
    torch.manual_seed(0)
    model = LSTMLM(LSTMConfig(vocab_size=9, embed_dim=4, hidden_size=5)).double().eval()
    idx = torch.randint(0, 9, (2, 12), generator=_gen())
    whole, _ = model(idx)
    first, state = model(idx[:, :5])
    second, _ = model(idx[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=1e-12)


def test_detach_state_keeps_values_and_drops_the_graph():
    model = LSTMLM(LSTMConfig(vocab_size=9, embed_dim=4, hidden_size=5))
    _, state = model(torch.zeros(2, 3, dtype=torch.long))
    assert state[0].grad_fn is not None
    h, c = detach_state(state)
    assert h.grad_fn is None and c.grad_fn is None
    assert torch.equal(h, state[0]) and torch.equal(c, state[1])


def test_weight_tying_shares_the_matrix_and_saves_parameters():
    untied = LSTMLM(LSTMConfig(vocab_size=20, embed_dim=8, hidden_size=8))
    tied = LSTMLM(LSTMConfig(vocab_size=20, embed_dim=8, hidden_size=8, tie_weights=True))
    assert tied.head.weight is tied.embed.weight
    assert num_params(untied) - num_params(tied) == 20 * 8
    with pytest.raises(ValueError, match="embed_dim == hidden_size"):
        LSTMConfig(embed_dim=8, hidden_size=16, tie_weights=True)


def test_bad_input_raises():
    model = LSTMLM(LSTMConfig(vocab_size=9, embed_dim=4, hidden_size=5))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="token id 9 is out of range for a vocabulary of 9"):
        model(torch.tensor([[1, 9]]))
    with pytest.raises(ValueError, match="token id 12 is out of range"):
        generate(model, [1, 12], 3)
    with pytest.raises(ValueError, match="dropout"):
        LSTMConfig(dropout=1.0)


def test_engine_trains_the_lstm_with_tbptt_on_a_periodic_stream():
    ids = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7] * 200)
    torch.manual_seed(0)
    model = LSTMLM(LSTMConfig(vocab_size=8, embed_dim=8, hidden_size=16, num_layers=1, dropout=0.0))
    before = evaluate(model, ids, batch_size=4, bptt=16)
    cfg = TrainConfig(steps=60, batch_size=4, context_length=16, lr=3e-2, min_lr=3e-3, warmup_steps=0,
                      eval_every=30, eval_batches=2, objective="tbptt")
    hist = train(model, ids, ids, cfg)
    assert hist.steps == [0, 30, 60]
    assert before > 1.8  # about ln 8 = 2.08 before training
    assert evaluate(model, ids, batch_size=4, bptt=16) < 0.3  # the next token is fully determined


def test_generate_is_seeded_and_the_right_length():
    torch.manual_seed(0)
    model = LSTMLM(LSTMConfig(vocab_size=9, embed_dim=4, hidden_size=5))
    a = generate(model, [1, 2], 20, generator=_gen(3))
    b = generate(model, [1, 2], 20, generator=_gen(3))
    assert a == b and len(a) == 20 and all(0 <= i < 9 for i in a)
    with pytest.raises(ValueError):
        generate(model, [], 5)


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = LSTMLM(LSTMConfig(vocab_size=9, embed_dim=4, hidden_size=5))
    path = tmp_path / "m.pt"
    save_weights(model, path, dtype=torch.float32)
    loaded = load_pretrained(str(path))
    assert isinstance(loaded, LSTMLM) and not loaded.training
    idx = torch.randint(0, 9, (2, 4), generator=_gen())
    torch.testing.assert_close(loaded(idx)[0], model.eval()(idx)[0])
    with pytest.raises(FileNotFoundError, match="no model checkpoint"):
        load_pretrained(str(tmp_path / "missing.pt"))
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["hidden_size"] = 6  # the weights no longer fit
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="does not match"):
        load_pretrained(str(path))


def test_shipped_checkpoint_matches_its_manifest():
    path = CHECKPOINT_DIR / f"{PRETRAINED}.pt"
    entry = json.loads((CHECKPOINT_DIR / "manifest.json").read_text())[PRETRAINED]
    assert sha256(path) == entry["sha256"]
    assert path.stat().st_size < 5_000_000
    model = load_pretrained(PRETRAINED)
    assert num_params(model) == entry["parameters"]
    assert LSTMConfig(**entry["config"]) == model.config


# ----------------------------------------------------------------------------------
# The other cells, the stream scorer and the gradient measurement


def test_rnn_and_gru_cells_equal_torch_cells_float64():
    g = _gen(3)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64)
    h = torch.randn(4, 6, generator=g, dtype=torch.float64)
    for ours, ref in ((rnn_cell, nn.RNNCell(5, 6)), (gru_cell, nn.GRUCell(5, 6))):
        ref = ref.double()
        expected = ref(x, h)
        got = ours(x, h, ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_lm_with_other_cells_carries_state_like_one_pass(cell):
    torch.manual_seed(0)
    model = LSTMLM(LSTMConfig(vocab_size=9, embed_dim=4, hidden_size=5, num_layers=2, cell=cell)).double().eval()
    assert isinstance(model.rnn, {"gru": nn.GRU, "rnn": nn.RNN}[cell])
    idx = torch.randint(0, 9, (2, 12), generator=_gen())
    whole, state = model(idx)
    assert len(state) == 1 and state[0].shape == (2, 2, 5)  # (h,) only
    first, state = model(idx[:, :5])
    second, _ = model(idx[:, 5:], detach_state(state))
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=1e-12)


def test_cell_config_errors():
    with pytest.raises(ValueError, match="cell must be one of"):
        LSTMConfig(cell="transformer")
    with pytest.raises(ValueError, match="scratch=True"):
        LSTMConfig(cell="gru", scratch=True)


def test_engine_trains_a_gru_with_tbptt():
    torch.manual_seed(0)
    ids = torch.arange(6).repeat(300)
    model = LSTMLM(LSTMConfig(vocab_size=6, embed_dim=8, hidden_size=16, num_layers=1, dropout=0.0, cell="gru"))
    cfg = TrainConfig(steps=60, batch_size=4, context_length=16, lr=1e-2, min_lr=1e-3, warmup_steps=0,
                      eval_every=60, eval_batches=2, objective="tbptt")
    hist = train(model, ids, ids, cfg)
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0]


@pytest.mark.parametrize("batch_size, warmup", [(1, 0), (3, 0), (4, 5), (7, 100)])
def test_stream_nll_scores_every_target_like_one_pass(batch_size, warmup):
    torch.manual_seed(0)
    model = LSTMLM(LSTMConfig(vocab_size=7, embed_dim=4, hidden_size=6, num_layers=2)).double().eval()
    ids = torch.randint(0, 7, (50,), generator=_gen(2))
    got = stream_nll(model, ids, batch_size=batch_size, bptt=6, warmup=warmup)
    assert got.shape == (49,)
    # reference: one pass over the whole stream from a zero state
    logits, _ = model(ids[None, :-1])
    ref = F.cross_entropy(logits[0], ids[1:], reduction="none").float()
    if batch_size == 1 or warmup >= 50:
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    else:  # each piece restarts cold `warmup` tokens early: the first piece is exact
        first = 49 // batch_size
        torch.testing.assert_close(got[:first], ref[:first], rtol=0, atol=1e-6)
        assert not torch.allclose(got, ref, atol=1e-6)
    with pytest.raises(ValueError, match="warmup must be >= 0"):
        stream_nll(model, ids, warmup=-1)
    with pytest.raises(ValueError, match="at least two tokens"):
        stream_nll(model, ids[:1])


def test_stream_nll_with_a_long_warmup_equals_one_pass():
    torch.manual_seed(0)
    model = LSTMLM(LSTMConfig(vocab_size=7, embed_dim=4, hidden_size=6, num_layers=1)).double().eval()
    ids = torch.randint(0, 7, (40,), generator=_gen(4))
    logits, _ = model(ids[None, :-1])
    ref = F.cross_entropy(logits[0], ids[1:], reduction="none").float()
    got = stream_nll(model, ids, batch_size=5, bptt=4, warmup=40)  # every piece reads from the start
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_state_gradient_norms_match_finite_differences(cell):
    # d loss / d h_s by central differences on a hand-unrolled recurrence, float64
    torch.manual_seed(0)
    model = LSTMLM(LSTMConfig(vocab_size=5, embed_dim=3, hidden_size=4, num_layers=1, dropout=0.0,
                              cell=cell)).double().eval()
    x = torch.randint(0, 5, (1, 6), generator=_gen(5))
    y = torch.randint(0, 5, (1, 6), generator=_gen(6))
    got = state_gradient_norms(model, x, y)  # (1, 6), column k = distance k
    step = {"lstm": lstm_cell, "gru": gru_cell, "rnn": rnn_cell}[cell]
    w = [getattr(model.rnn, f"{n}_l0") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    emb = model.embed(x)[0].detach()

    def loss_with_push(s: int, delta: torch.Tensor) -> float:
        h = torch.zeros(1, 4, dtype=torch.float64)
        c = torch.zeros(1, 4, dtype=torch.float64)
        for t in range(6):
            if cell == "lstm":
                h, c = step(emb[t:t + 1], (h, c), *w)
            else:
                h = step(emb[t:t + 1], h, *w)
            if t == s:
                h = h + delta  # perturb h_s only (c_s held)
        return F.cross_entropy(model.head(h), y[:, -1]).item()

    eps = 1e-6
    with torch.no_grad():
        for s in range(6):
            grad = torch.tensor([(loss_with_push(s, eps * e) - loss_with_push(s, -eps * e)) / (2 * eps)
                                 for e in torch.eye(4, dtype=torch.float64)])
            assert abs(got[0, 5 - s].item() - grad.norm().item()) < 1e-6, (cell, s)


def test_state_gradient_norms_bad_input():
    model = LSTMLM(LSTMConfig(vocab_size=5, embed_dim=3, hidden_size=4, num_layers=1))
    with pytest.raises(ValueError, match="same shape"):
        state_gradient_norms(model, torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        state_gradient_norms(model, torch.full((1, 4), 7), torch.zeros(1, 4, dtype=torch.long))


def test_window_nll_reads_only_its_window():
    from lmcourse.lstm import window_nll

    torch.manual_seed(0)
    model = LSTMLM(LSTMConfig(vocab_size=7, embed_dim=5, hidden_size=6, num_layers=2))
    ids = torch.randint(0, 7, (60,), generator=torch.Generator().manual_seed(1))
    # a window that reaches the stream's first token: the same cold start stream_nll makes
    full = stream_nll(model, ids, batch_size=1, bptt=16)
    targets = torch.tensor([5, 17, 40])
    assert torch.allclose(window_nll(model, ids, targets, context=5)[:1], full[4:5], atol=1e-6)
    # changing a token outside the window changes nothing; inside it, the loss moves
    short = window_nll(model, ids, targets, context=4)
    outside, inside = ids.clone(), ids.clone()
    outside[targets[1] - 5] = (ids[targets[1] - 5] + 1) % 7
    inside[targets[1] - 1] = (ids[targets[1] - 1] + 1) % 7
    assert torch.equal(window_nll(model, outside, targets, context=4), short)
    assert window_nll(model, inside, targets, context=4)[1] != short[1]
    # against a hand-run forward from zeros
    with torch.no_grad():
        logits, _ = model.eval()(ids[None, 36:40])
    want = -torch.log_softmax(logits[0, -1], -1)[ids[40]]
    assert torch.allclose(short[2], want, atol=1e-6)
    with pytest.raises(ValueError, match="needs 4 tokens before it"):
        window_nll(model, ids, torch.tensor([2]), context=4)
