"""Tests of lmcourse.finetune: the verse/prose labels, the classifier head, probe and fine-tuning."""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmcourse.data import load_play, load_shakespeare
from lmcourse.finetune import (
    LABELS,
    EncoderClassifier,
    balanced_indices,
    char_ngram_features,
    classifier_accuracy,
    encoder_features,
    fit_logistic_regression,
    speech_label,
    train_classifier,
    verse_prose_lines,
)
from lmcourse.transformer import GPT, GPTConfig

TINY = GPTConfig(vocab_size=12, context_length=16, d_model=16, n_layers=2, n_heads=2, causal=False,
                 positional="rope")


def test_speech_label_by_hand():
    prose = ["Here's a knocking indeed! If a", "man were porter of hell-gate, he should have",
             "old turning the key."]
    verse = ["Thou hadst, and more, Miranda. But how is it", "That this lives in thy mind? What seest thou else",
             "In the dark backward and abysm of time?"]
    assert speech_label(prose) == 1 and speech_label(verse) == 0 and LABELS == ("verse", "prose")
    assert speech_label(verse[:2]) is None  # too short to tell
    mixed = verse + ["and one lowercase line"] + verse * 2  # 1 of 8 later lines: neither rule holds
    assert speech_label(mixed) is None


def test_verse_prose_lines_of_the_held_out_plays():
    texts, labels = verse_prose_lines("val", length=32)
    assert len(texts) == len(labels) and set(labels) == {0, 1}
    assert all(len(t) == 32 and not t[0].isupper() for t in texts)  # the first letter's case is hidden
    val = load_shakespeare("val")
    assert all(t[1:] in val for t in texts[::50])  # cut from the text itself
    # the Porter's prose and Prospero's verse (Macbeth, The Tempest), as the rule reads them
    assert labels[texts.index("man were porter of hell-gate, he")] == 1
    assert labels[texts.index("that this lives in thy mind? Wha")] == 0
    assert "That this lives in thy mind? What seest thou else" in load_play("the-tempest")
    with pytest.raises(ValueError, match="length"):
        verse_prose_lines("val", length=1)
    with pytest.raises(ValueError, match="split"):
        verse_prose_lines("nonsense")


def test_balanced_indices():
    labels = [0] * 50 + [1] * 7 + [2] * 20
    idx = balanced_indices(labels, 5, torch.Generator().manual_seed(0))
    picked = torch.tensor(labels)[idx]
    assert [(picked == k).sum().item() for k in range(3)] == [5, 5, 5]
    assert len(set(idx.tolist())) == 15 and torch.equal(idx, idx.sort().values)
    with pytest.raises(ValueError, match="fewer than per_class"):
        balanced_indices(labels, 8, torch.Generator())


def _encoder(seed=0):
    torch.manual_seed(seed)
    return GPT(TINY).double()


def test_features_are_the_mean_of_the_last_hidden_states():
    """Tied head: logits = LN(h) E^T is linear in LN(h), so mean_t logits = features E^T."""
    enc = _encoder()
    clf = EncoderClassifier(enc, num_classes=3).double().eval()
    ids = torch.randint(0, 12, (4, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = clf.features(ids)
        assert feats.shape == (4, TINY.d_model)
        assert torch.allclose(feats @ enc.tok_emb.weight.T, enc(ids).mean(dim=1), atol=1e-12)
        assert torch.allclose(clf(ids), clf.head(feats))
        assert torch.allclose(encoder_features(clf, ids, batch_size=3), feats)
    assert not enc.ln_f._forward_hooks  # the hook is removed after each call


def test_classifier_rejects_bad_arguments():
    with pytest.raises(TypeError, match="encoder"):
        EncoderClassifier(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="num_classes"):
        EncoderClassifier(_encoder(), num_classes=1)
    clf = EncoderClassifier(_encoder()).double()
    ids = torch.zeros(4, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="ids must be"):
        train_classifier(clf, ids.float(), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be"):
        train_classifier(clf, ids, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="frozen encoder"):
        train_classifier(clf, ids, torch.zeros(4, dtype=torch.long), features=torch.zeros(4, 16))
    with pytest.raises(ValueError, match="features must have shape"):
        train_classifier(clf, ids, torch.zeros(4, dtype=torch.long), freeze_encoder=True,
                         features=torch.zeros(4, 5))


def test_accuracy_of_a_classifier_that_always_says_class_0():
    clf = EncoderClassifier(_encoder()).double()
    with torch.no_grad():
        clf.head.weight.zero_()
        clf.head.bias.copy_(torch.tensor([1.0, 0.0]))
    ids = torch.randint(0, 12, (20, 8), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0] * 13 + [1] * 7)
    assert classifier_accuracy(clf, ids, labels, batch_size=6) == pytest.approx(13 / 20)


def _task(n=256):
    """Class 1 if the sequence contains token 1, else 0: what a mean of features can see."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 12, (n, 8), generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    where = torch.randint(0, 8, (n,), generator=g)
    ids[labels == 1, where[labels == 1]] = 1
    return ids, labels


def test_fine_tuning_learns_and_the_probe_leaves_the_encoder_alone():
    ids, labels = _task()
    clf = EncoderClassifier(_encoder()).double()
    before = {k: v.clone() for k, v in clf.encoder.state_dict().items()}
    losses = train_classifier(clf, ids, labels, steps=200, lr=1e-2, batch_size=32, freeze_encoder=True)
    assert len(losses) == 200 and not clf.training
    assert all(torch.equal(before[k], v) for k, v in clf.encoder.state_dict().items())
    probe = classifier_accuracy(clf, ids, labels)
    # the same run from features computed beforehand: the same losses
    clf2, clf3 = EncoderClassifier(_encoder()).double(), EncoderClassifier(_encoder()).double()
    assert torch.equal(clf2.head.weight, clf3.head.weight)  # seeded alike
    a = train_classifier(clf2, ids, labels, steps=20, freeze_encoder=True)
    b = train_classifier(clf3, ids, labels, steps=20, freeze_encoder=True, features=encoder_features(clf3, ids))
    assert a == pytest.approx(b, abs=1e-12)
    # fine-tuning moves the encoder and fits the task
    ft = EncoderClassifier(_encoder()).double()
    train_classifier(ft, ids, labels, steps=100, lr=3e-3, batch_size=32)
    assert any(not torch.equal(before[k], v) for k, v in ft.encoder.state_dict().items())
    assert classifier_accuracy(ft, ids, labels) > 0.95 and probe > 0.6


def test_char_ngram_features_count_like_a_counter():
    texts = ["to be or", "not to be", "zz"]
    X, vocab = char_ngram_features(texts, n_max=3)
    for r, t in enumerate(texts):
        counts = Counter(t[i:i + n] for n in (1, 2, 3) for i in range(len(t) - n + 1))
        row = torch.zeros(len(vocab))
        for q, c in counts.items():
            row[vocab[q]] = c
        assert torch.allclose(X[r], row / row.norm())
    # held-out texts reuse the vocabulary; unseen n-grams are dropped
    Y, same = char_ngram_features(["be?"], n_max=3, vocabulary=vocab)
    assert same is vocab and Y.shape == (1, len(vocab))
    assert torch.allclose(Y[0, [vocab["b"], vocab["e"], vocab["be"]]], torch.full((3,), 3 ** -0.5))
    with pytest.raises(ValueError, match="n_max"):
        char_ngram_features(texts, n_max=0)
    with pytest.raises(ValueError, match="strings"):
        char_ngram_features("abc", n_max=1)


def test_logistic_regression_reaches_the_lbfgs_minimum():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 6, generator=g, dtype=torch.float64).float()
    y = (X[:, 0] + 0.5 * torch.randn(200, generator=g) > 0).long() + (X[:, 1] > 1).long()  # 3 classes
    l2 = 1e-2
    head = fit_logistic_regression(X, y, l2=l2, steps=1500, lr=0.05)

    # the independent reference: the same convex objective in float64, minimised by L-BFGS
    W = torch.zeros(3, 6, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def objective():
        opt.zero_grad()
        loss = F.cross_entropy(X.double() @ W.T + b, y) + l2 * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(objective)
    assert torch.allclose(head.weight.double(), W.detach(), atol=2e-3)
    # the bias is unpenalised and softmax ignores a common shift: compare it centred
    centred = head.bias.double() - head.bias.double().mean()
    assert torch.allclose(centred, b.detach() - b.detach().mean(), atol=2e-3)
    assert not head.weight.requires_grad
    with pytest.raises(ValueError, match="features"):
        fit_logistic_regression(X.long(), y, l2=l2)
    with pytest.raises(ValueError, match="l2"):
        fit_logistic_regression(X, y, l2=-1.0)
