"""The KV cache and generate(): cached == uncached, token for token and logit for logit."""

from __future__ import annotations

import pytest
import torch

from lmcourse.generation import (
    KVCache,
    LayerKVCache,
    generate,
    kv_cache_bytes,
    tokens_per_second,
)
from lmcourse.transformer import GPT, POSITIONAL, GPTConfig

V, C = 13, 12


def tiny(positional: str, seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=V, context_length=C, d_model=32, n_layers=3, n_heads=4, positional=positional, **kw)
    return GPT(config).eval()


def prompt(B: int = 3, T: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("positional", POSITIONAL)
def test_cached_step_logits_equal_full_forward(positional):
    model = tiny(positional)
    x = prompt(B=2, T=C)
    full = model(x)  # (B, C, V), the reference: no cache
    cache = KVCache.for_model(model, batch_size=2)
    prefill = model(x[:, :7], cache=cache)
    steps = torch.stack([model(x[:, t : t + 1], offset=t, cache=cache)[:, -1] for t in range(7, C)], dim=1)
    torch.testing.assert_close(prefill, full[:, :7], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(steps, full[:, 7:], atol=1e-5, rtol=1e-5)
    assert cache.length == C


@pytest.mark.parametrize("positional", POSITIONAL)
def test_chunked_prefill_equals_full_forward(positional):
    # several new tokens at once against a non-empty cache: the (T, Tk) causal mask
    model = tiny(positional)
    x = prompt(B=2, T=C)
    cache = KVCache.for_model(model, batch_size=2)
    parts = [
        model(x[:, :4], cache=cache),
        model(x[:, 4:9], offset=4, cache=cache),
        model(x[:, 9:], offset=9, cache=cache),
    ]
    torch.testing.assert_close(torch.cat(parts, dim=1), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positional", POSITIONAL)
@pytest.mark.parametrize("slide", [1, 5])
def test_greedy_cached_equals_uncached_batch_and_past_context(positional, slide):
    model = tiny(positional)
    p = prompt(B=3, T=5)
    n_new = 3 * C  # well past the context length: the window slides
    cached = generate(model, p, n_new, do_sample=False, slide=slide)
    uncached = generate(model, p, n_new, do_sample=False, use_cache=False, slide=slide)
    concat = generate(model, p, n_new, do_sample=False, concat_cache=True, slide=slide)
    assert cached.shape == (3, 5 + n_new)
    assert torch.equal(cached[:, :5], p)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, concat)


def test_uncached_slide_one_is_the_nanogpt_crop():
    # the reference loop written out: logits of model(ids[:, -C:]) at the last position
    model = tiny("learned")
    ids = prompt(B=2, T=4)
    for _ in range(2 * C):
        ids = torch.cat([ids, model(ids[:, -C:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generate(model, ids[:, :4], 2 * C, do_sample=False), ids)


def test_prompt_longer_than_context():
    model = tiny("rope")
    p = prompt(B=2, T=C + 3)
    a = generate(model, p, 4, do_sample=False)
    assert torch.equal(a, generate(model, p, 4, do_sample=False, use_cache=False))
    assert a.shape == (2, C + 7)


@pytest.mark.parametrize("kw", [dict(), dict(top_k=4, temperature=0.8), dict(top_p=0.9, repetition_penalty=1.3)])
def test_sampling_same_draws_with_and_without_cache(kw):
    model = tiny("alibi")
    p = prompt(B=2, T=3)
    a = generate(model, p, 20, generator=torch.Generator().manual_seed(5), **kw)
    b = generate(model, p, 20, generator=torch.Generator().manual_seed(5), use_cache=False, **kw)
    assert torch.equal(a, b)


def test_repetition_penalty_is_applied():
    from lmcourse.decoding import apply_repetition_penalty

    model = tiny("learned")
    ids = prompt(B=2, T=3)
    for _ in range(8):  # the reference loop: penalise every id so far, then argmax
        z = apply_repetition_penalty(model(ids)[:, -1], ids, 3.0)
        ids = torch.cat([ids, z.argmax(-1, keepdim=True)], dim=1)
    out = generate(model, ids[:, :3], 8, do_sample=False, repetition_penalty=3.0)
    assert torch.equal(out, ids)
    assert not torch.equal(out, generate(model, ids[:, :3], 8, do_sample=False))


def test_restores_training_mode_and_zero_new_tokens():
    model = tiny("learned", dropout=0.1).train()
    p = prompt()
    assert torch.equal(generate(model, p, 0), p)
    assert model.training
    assert torch.equal(generate(model, p, 6, do_sample=False), generate(model, p, 6, do_sample=False, use_cache=False))


def test_cache_memory_formula_matches_tensors():
    model = tiny("learned")
    cache = KVCache.for_model(model, batch_size=3)
    c = model.config
    assert cache.nbytes() == kv_cache_bytes(c.n_layers, 3, c.n_heads, C, c.d_model // c.n_heads, 4)
    half = KVCache.for_model(model.half(), batch_size=3)
    assert half.nbytes() == kv_cache_bytes(c.n_layers, 3, c.n_heads, C, c.d_model // c.n_heads, 2)


def test_bad_input_raises():
    model = tiny("learned")
    cache = KVCache.for_model(model, batch_size=1)
    model(prompt(B=1, T=4), cache=cache)
    with pytest.raises(ValueError, match="offset"):
        model(prompt(B=1, T=1), offset=2, cache=cache)
    with pytest.raises(ValueError, match="holds"):
        LayerKVCache(1, 2, 4, 8).append(torch.zeros(1, 2, 5, 8), torch.zeros(1, 2, 5, 8))
    with pytest.raises(ValueError, match="prompt_ids"):
        generate(model, torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="slide"):
        generate(model, prompt(), 2, slide=0)


@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_rejects_out_of_range_ids_and_restores_the_mode(use_cache):
    model = tiny("learned").train()
    bad = torch.tensor([[1, 2, V]])  # V = model.config.vocab_size: one past the last id
    with pytest.raises(ValueError, match=f"token id {V} is out of range for a vocabulary of {V} ids"):
        generate(model, bad, 3, use_cache=use_cache)
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        generate(model, torch.tensor([[-1, 2]]), 3, use_cache=use_cache)
    assert model.training  # untouched by the failed calls
    out = generate(model, prompt(), 3, use_cache=use_cache)
    assert out.shape == (3, 8) and model.training  # eval inside, training mode restored


def test_tokens_per_second_counts_all_rows():
    model = tiny("rope")
    assert tokens_per_second(model, prompt(B=2, T=3), 4, repeats=2) > 0
