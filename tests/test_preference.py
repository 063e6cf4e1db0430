"""DPO: the loss against a hand-worked case and autograd, sequence log-probabilities, the syllable counter."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmcourse.preference import (
    IGNORE_INDEX,
    dpo_loss,
    encode_pairs,
    implicit_reward,
    preference_pairs,
    sequence_logprob,
    syllables,
    verse_prompts,
    word_syllables,
)
from lmcourse.tokenization import shakespeare_char_tokenizer
from lmcourse.train import TrainConfig, train
from lmcourse.transformer import GPT, GPTConfig


def test_dpo_hand_worked():
    # policy/ref log-probs: chosen -4 vs -5, rejected -6 vs -5; beta 0.5
    # margin = 0.5 * ((-4 + 5) - (-6 + 5)) = 1; loss = -ln sigmoid(1) = ln(1 + e^-1)
    loss = dpo_loss(torch.tensor([-4.0]), torch.tensor([-6.0]), torch.tensor([-5.0]), torch.tensor([-5.0]), 0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    pc, pr = torch.tensor([-3.0, -2.0], requires_grad=True), torch.tensor([-2.5, -4.0], requires_grad=True)
    rc, rr = torch.tensor([-3.0, -2.5]), torch.tensor([-2.0, -3.0])
    beta = 0.3
    dpo_loss(pc, pr, rc, rr, beta).backward()
    margin = beta * ((pc - rc) - (pr - rr)).detach()
    expected = -beta * torch.sigmoid(-margin) / 2  # d/d pc of the mean of -log sigmoid
    torch.testing.assert_close(pc.grad, expected)
    torch.testing.assert_close(pr.grad, -expected)
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # descent raises chosen, lowers rejected


def test_dpo_is_ln2_at_the_reference_and_bad_input():
    z = torch.randn(5)
    assert dpo_loss(z, z + 1, z, z + 1, beta=2.0).item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(z, z, z, z, beta=0)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(z, z[:2], z, z, beta=1)
    assert implicit_reward(torch.tensor(-1.0), torch.tensor(-3.0), 0.5).item() == 1.0


def test_sequence_logprob_against_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 9, generator=g, dtype=torch.float64)
    y = torch.randint(0, 9, (2, 6), generator=g)
    y[0, :3] = IGNORE_INDEX
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="none").view(2, 6)
    torch.testing.assert_close(sequence_logprob(logits, y), -ce.sum(-1).float(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="need logits"):
        sequence_logprob(logits, y[:, :3])


# hand-counted syllables of words from the plays; the heuristic gets these right
HAND = {"love": 1, "music": 2, "fire": 1, "heaven": 2, "tomorrow": 3, "noble": 2, "gentle": 2, "king": 1,
        "madam": 2, "brother": 2, "father": 2, "majesty": 3, "loves": 1, "times": 1, "horses": 2,
        "honour": 2, "answer": 2, "daughter": 2, "remember": 3, "beautiful": 3}


def test_word_syllables_on_hand_counted_words():
    wrong = {w: word_syllables(w) for w, n in HAND.items() if word_syllables(w) != n}
    assert not wrong
    with pytest.raises(ValueError, match="one word"):
        word_syllables("two words")


def test_syllables_of_famous_pentameters():
    lines = ["Shall I compare thee to a summer's day?", "But soft, what light through yonder window breaks?",
             "Now is the winter of our discontent", "If music be the food of love, play on"]
    assert [syllables(line) for line in lines] == [10, 10, 10, 10]


def test_pairs_prompts_and_encoding():
    pairs = preference_pairs(["p1", "p2", "p3"], [["a", "bb"], ["a", "a"], ["bb", "cc"]], lambda s: len(s) == 2)
    assert pairs == [("p1", "bb", "a")]
    with pytest.raises(ValueError, match="prompts"):
        preference_pairs(["p"], [], len)
    prompts = verse_prompts("val", 20, length=40)
    assert len(prompts) == 20 and all(len(p) == 40 and p.endswith("\n") for p in prompts)
    tok = shakespeare_char_tokenizer()
    rows = encode_pairs([("Ab\n", "cd", "e")], tok, context_length=8)
    assert rows.shape == (1, 4, 8)
    assert tok.decode([t for t in rows[0, 1].tolist() if t != IGNORE_INDEX]) == "cd\n"
    assert tok.decode([t for t in rows[0, 3].tolist() if t != IGNORE_INDEX]) == "e\n"


def test_dpo_objective_trains_through_the_engine():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=75, context_length=16, d_model=16, n_layers=1, n_heads=2)
    model, reference = GPT(cfg), GPT(cfg)
    reference.load_state_dict(model.state_dict())
    tok = shakespeare_char_tokenizer()
    pairs = encode_pairs([("Ab\n", "cd", "efg"), ("Xy\n", "cd", "zz")] * 4, tok, context_length=16)
    hist = train(model, pairs, pairs, TrainConfig(steps=20, batch_size=4, context_length=16, warmup_steps=1,
                                                  eval_every=20, eval_batches=2, lr=1e-2, objective="dpo",
                                                  dpo_beta=0.5), reference=reference)
    assert hist.val_loss[0] == pytest.approx(math.log(2), abs=1e-5)  # policy = reference at the start
    assert hist.val_loss[-1] < 0.3
    with pytest.raises(ValueError, match="reference model"):
        train(GPT(cfg), pairs, pairs, TrainConfig(steps=2, batch_size=4, warmup_steps=1, objective="dpo"))
