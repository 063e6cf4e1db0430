"""Name augmentation (lmcourse.renaming) and the copying probes (lmcourse.copying)."""

import re

import pytest
import torch

from lmcourse.copying import induction_scores, repeat_losses, repeated_random
from lmcourse.data import load_play, load_shakespeare, split_plays
from lmcourse.renaming import lower_case_counts, play_names, rename, renamed_training_text
from lmcourse.tokenization import shakespeare_char_tokenizer


@pytest.fixture(scope="module")
def lower():
    return lower_case_counts(load_shakespeare("train"))


def test_play_names_are_names_not_roles(lower):
    names = play_names(load_play("macbeth"), lower)
    assert {"MACBETH", "BANQUO", "DUNCAN", "MACDUFF"} <= set(names)
    assert not {"FIRST", "WITCH", "LADY", "SERVANT", "MESSENGER", "LORD"} & set(names)


def test_rename_keeps_case_and_word_boundaries():
    text = "MACBETH:\nMacbeth, macbeth! MACBETHS Macbeth's\n"
    assert rename(text, {"MACBETH": "DORIO"}) == "DORIO:\nDorio, dorio! MACBETHS Dorio's\n"
    assert rename(text, {}) == text


@pytest.mark.slow
def test_renamed_copies_rename_every_play_consistently(lower):
    original = load_shakespeare("train")
    text = renamed_training_text(1, seed=3)
    assert text.startswith(original) and len(text) > 1.9 * len(original)
    copy = text[len(original):]
    # the first play of the copy: none of its own names is left, and each heading maps to one new name
    first = load_play(split_plays("train")[0])
    own = play_names(first, lower)
    headings = re.findall(r"^([A-Z][A-Z' .,-]*):\n", copy[:20000], re.M)  # the copy's first play
    old_headings = re.findall(r"^([A-Z][A-Z' .,-]*):\n", first[:20000], re.M)
    assert len(headings) >= 20
    pairs = {}
    for old, new in zip(old_headings, headings, strict=False):
        pairs.setdefault(old, set()).add(new)
    assert all(len(v) == 1 for v in pairs.values()), "a speaker must get one new name throughout the play"
    assert not set(own) & {w for h in headings for w in h.split()}
    assert renamed_training_text(1, seed=3) == text and renamed_training_text(1, seed=4) != text


@pytest.mark.slow
def test_renamed_text_stays_in_the_vocabulary():
    tok = shakespeare_char_tokenizer()
    text = renamed_training_text(1, seed=0)
    assert set(text) <= set(tok.decode(list(range(tok.vocab_size))))


def test_renamed_training_text_rejects_negative_copies():
    with pytest.raises(ValueError, match="copies"):
        renamed_training_text(-1)


class _FakeAttention(torch.nn.Module):
    """A 'model' whose single layer attends as told, to check induction_scores by hand."""

    def __init__(self, weights):
        super().__init__()
        self.weights = weights

    def attention_maps(self, ids):
        return [self.weights]


def test_induction_scores_by_hand():
    L = 5
    x = repeated_random(range(10), L, torch.Generator().manual_seed(0))[None]
    T = 2 * L
    perfect = torch.zeros(1, 2, T, T)
    perfect[0, 0, 0, 0] = 1
    for t in range(1, T):
        perfect[0, 0, t, t - L + 1 if t >= L else 0] = 1
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    perfect[0, 1] = uniform
    scores = induction_scores(_FakeAttention(perfect), x)
    assert scores.shape == (1, 2)
    assert scores[0, 0].item() == pytest.approx(1.0)
    expected = sum(1 / (t + 1) for t in range(L, T)) / L  # uniform attention: 1/(t+1) on every key
    assert scores[0, 1].item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="halves"):
        induction_scores(_FakeAttention(perfect), torch.arange(T)[None])


def test_repeat_losses_of_a_perfect_copier():
    class Copier(torch.nn.Module):  # predicts x[t - L + 1] for t >= L with certainty, uniform before
        def forward(self, ids):
            B, T = ids.shape
            logits = torch.zeros(B, T, 10)
            L = (T + 1) // 2
            for t in range(L, T):
                logits[:, t] = -1e9
                logits[torch.arange(B), t, ids[:, t - L + 1]] = 0.0
            return logits

    x = repeated_random(range(10), 6, torch.Generator().manual_seed(1))[None]
    first, second = repeat_losses(Copier(), x)
    assert first == pytest.approx(torch.log(torch.tensor(10.0)).item())
    assert second == pytest.approx(0.0, abs=1e-6)
