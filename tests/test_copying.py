"""The copying tools of chapter 11: the cache n-gram, the kinds and bins of occurrences, head ablation."""

import math
import random
from collections import Counter

import pytest
import torch

from lmcourse.copying import (
    ablate_heads,
    cache_ngram_log_probs,
    gap_bin,
    grouped_losses,
    new_word_occurrences,
    occurrence_kind,
)
from lmcourse.transformer import GPT, GPTConfig


def test_cache_ngram_hand_worked():
    # uniform base over 3 symbols; orders (2, 1); weight 1/2
    base = torch.full((4,), math.log(1 / 3))
    p = cache_ngram_log_probs([0, 1, 0, 1, 0], base, window=10, orders=(2, 1), weight=0.5).exp()
    # t=1, t=2: no earlier context; t=3: "0" was followed by "1" once; t=4: "01" was followed by "0" once
    assert torch.allclose(p, torch.tensor([1 / 3, 1 / 3, 2 / 3, 2 / 3], dtype=torch.float64))
    # a wrong cache guess: t=3 sees "0" -> "1" but the text says "2": only the base's share is left
    p = cache_ngram_log_probs([0, 1, 0, 2], base[:3], window=10, orders=(1,), weight=0.5).exp()
    assert p[2].item() == pytest.approx(0.5 / 3)
    # the longest order wins: at t=5 order 2 ("12" -> "0") beats order 1 ("2" -> "0", "2" -> "1": 1/2)
    ids = [2, 1, 2, 0, 1, 2, 0]
    p = cache_ngram_log_probs(ids, torch.full((6,), math.log(1 / 3)), window=10, orders=(2, 1), weight=1.0).exp()
    assert p[5].item() == pytest.approx(1.0)
    # the window: at t=4 the context "0" at 0..1 lies more than 3 characters back, so nothing matches
    p = cache_ngram_log_probs([0, 1, 2, 2, 0, 1], torch.full((5,), math.log(1 / 3)), window=3, orders=(1,),
                              weight=1.0).exp()
    assert p[4].item() == pytest.approx(1 / 3)


def reference_cache(text: str, base: torch.Tensor, window: int, orders, weight: float) -> torch.Tensor:
    """The same model by string search over the window, position by position (slow, obvious)."""
    p = base.double().exp().clone()
    for i in range(1, len(text)):
        lo = max(0, i - window)
        for k in sorted(orders, reverse=True):
            if i - k < lo:
                continue
            ctx, counts, j = text[i - k:i], Counter(), text.find(text[i - k:i], lo)
            while j != -1 and j + k < i:
                counts[text[j + k]] += 1
                j = text.find(ctx, j + 1)
            if counts:
                p[i - 1] = (1 - weight) * p[i - 1] + weight * counts[text[i]] / sum(counts.values())
                break
    return p.log()


@pytest.mark.parametrize("window,orders,weight", [(16, (3, 2), 0.3), (40, (6, 5, 4, 3), 0.2), (7, (1,), 0.9)])
def test_cache_ngram_matches_string_search(window, orders, weight):
    rng = random.Random(0)
    text = "".join(rng.choice("abc ") for _ in range(300))
    ids = [ord(c) for c in text]
    base = torch.log_softmax(torch.randn(len(text) - 1, generator=torch.Generator().manual_seed(1)), 0)
    ours = cache_ngram_log_probs(ids, base, window=window, orders=orders, weight=weight)
    ref = reference_cache(text, base, window, orders, weight)
    assert torch.allclose(ours, ref, atol=1e-12)


def test_cache_ngram_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        cache_ngram_log_probs([0, 1, 2], torch.zeros(3))
    with pytest.raises(ValueError, match="weight"):
        cache_ngram_log_probs([0, 1, 2], torch.zeros(2), weight=1.5)


def test_kinds_bins_and_groups():
    text = "MACBETH:\nZed, Zed.\n\nLADY MACBETH:\nZed\n" + "x " * 100 + "Zed\n"
    occ = new_word_occurrences([text], known=set("lady x".split()))
    kinds = [(o.word, occurrence_kind(text, o), gap_bin(o)) for o in occ]
    assert kinds[:5] == [("macbeth", "heading", "first"), ("zed", "other", "first"), ("zed", "other", "<=128"),
                         ("macbeth", "heading", "<=128"), ("zed", "other", "<=128")]
    assert gap_bin(occ[-1]) == "129-512" and occ[-1].gap == 204
    assert gap_bin(occ[-1], edges=(128, 200)) == ">200"
    nll = torch.arange(len(text) - 1, dtype=torch.float32)
    g = grouped_losses(nll, occ[:3], lambda o: o.word)
    # "macbeth" at 0: no character before it, left out; "zed" at 9 and 14: nll[9], nll[10], nll[14], nll[15]
    assert g == {"zed": {"nats": (9 + 10 + 14 + 15) / 4, "chars": 4, "words": 2}}


def test_ablate_heads_removes_exactly_that_heads_output():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, context_length=16, d_model=24, n_layers=2, n_heads=3, positional="rope",
                    norm="rms", bias=False)
    model = GPT(cfg).eval()
    x = torch.randint(11, (2, 16), generator=torch.Generator().manual_seed(0))
    before = model(x)
    ablated = ablate_heads(model, [(1, 2)])
    assert torch.equal(model(x), before)  # the original is untouched

    def drop_head(module, args):  # the reference: zero head 2's slice of the projection's input
        h = args[0].clone()
        h[..., 16:24] = 0
        return (h,)

    handle = model.blocks[1].attn.proj.register_forward_pre_hook(drop_head)
    try:
        assert torch.allclose(ablated(x), model(x), atol=1e-6)
    finally:
        handle.remove()
    assert not torch.allclose(ablated(x), before, atol=1e-3)
    with pytest.raises(ValueError, match="no head"):
        ablate_heads(model, [(2, 0)])


def test_copying_experiment_scores_each_group_of_a_play():
    from lmcourse.experiments.copying import score_play
    from lmcourse.ngram import NGramLM
    from lmcourse.tokenization import shakespeare_char_tokenizer

    tok = shakespeare_char_tokenizer()
    play = "MACBETH:\nZed, Zed.\n\nBANQUO:\nZed and Ozo.\n\nMACBETH:\nOzo.\n" * 4
    seven = NGramLM(3, "add_k", vocab_size=tok.vocab_size).fit(tok.encode("and the play.\n" * 20))
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=32, d_model=16, n_layers=1, n_heads=2)).eval()
    out = score_play(play, {"modern": (gpt, 32)}, seven, tok, known={"and"}, cache_weight=0.2)
    assert set(out) == {"7-gram", "cache 7-gram", "modern", "modern + cache"}
    for r in out.values():
        assert r["all"]["chars"] == len(play) - 1
        assert {"heading first", "heading <=128", "other first", "other <=128"} <= set(r["groups"])
    # the cache copies the repeated names: cheaper than the static counts on near repeats
    assert out["cache 7-gram"]["groups"]["other <=128"]["nats"] < out["7-gram"]["groups"]["other <=128"]["nats"]
