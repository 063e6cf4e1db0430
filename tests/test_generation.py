"""The KV cache and generate(): cached == uncached, token for token and logit for logit."""

from __future__ import annotations

import pytest
import torch

from lmcourse.attention import MultiHeadAttention, causal_mask
from lmcourse.generation import (
    KVCache,
    LayerKVCache,
    QuantizedLayerKVCache,
    compare_tokens_per_second,
    flops_per_new_token,
    forward_cost,
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


# --- grouped-query / multi-query attention (n_kv_heads) -------------------------------------------------------------

H = 4  # query heads of tiny(); d_model 32, so Dh = 8


def _as_multi_head(gqa: GPT) -> GPT:
    """The same function as ``gqa`` built as plain multi-head attention: each K/V head copied to its query heads.

    An independent reference for grouped-query attention: nothing of the GQA code path runs in it.
    """
    c = gqa.config
    mha = GPT(GPTConfig(**{**c.__dict__, "n_kv_heads": None})).eval()
    D, G, Dh = c.d_model, c.kv_heads, c.d_model // c.n_heads
    state = gqa.state_dict()
    for name, w in state.items():
        if name.endswith("attn.qkv.weight") or name.endswith("attn.qkv.bias"):
            q, k, v = w.split([D, G * Dh, G * Dh], dim=0)
            k, v = (z.unflatten(0, (G, Dh)).repeat_interleave(c.n_heads // G, dim=0).flatten(0, 1) for z in (k, v))
            state[name] = torch.cat([q, k, v], dim=0)
    mha.load_state_dict(state)
    return mha


def test_n_kv_heads_defaults_to_n_heads_and_is_checked():
    c = GPTConfig()
    assert c.n_kv_heads is None and c.kv_heads == c.n_heads
    model = GPT(GPTConfig(vocab_size=V, context_length=C, d_model=32, n_layers=1, n_heads=4))
    assert model.blocks[0].attn.qkv.weight.shape == (3 * 32, 32)  # every existing checkpoint still fits
    assert GPTConfig(n_heads=4, n_kv_heads=2).kv_heads == 2
    for bad in (0, 3, 8):
        with pytest.raises(ValueError, match="n_kv_heads must be a positive divisor of n_heads"):
            GPTConfig(n_heads=4, n_kv_heads=bad)
    with pytest.raises(ValueError, match="n_kv_heads"):
        MultiHeadAttention(d_model=32, n_heads=4, n_kv_heads=3)


@pytest.mark.parametrize("G", [1, 2, 4])
def test_parameter_count_formula_with_n_kv_heads(G):
    D, L, Dkv = 32, 3, G * 8
    model = tiny("learned", n_kv_heads=G)
    per_block = (
        2 * D  # ln1
        + D * (D + 2 * Dkv) + (D + 2 * Dkv)  # W_q, W_k, W_v and their biases
        + D * D + D  # output projection
        + 2 * D  # ln2
        + D * 4 * D + 4 * D + 4 * D * D + D  # MLP
    )
    assert model.num_params() == V * D + C * D + L * per_block + 2 * D  # tied head; final LayerNorm


@pytest.mark.parametrize("positional", POSITIONAL)
@pytest.mark.parametrize("G", [1, 2])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_gqa_equals_multi_head_with_repeated_kv_heads(positional, G, qk_norm):
    model = tiny(positional, n_kv_heads=G, qk_norm=qk_norm)
    reference = _as_multi_head(model)
    x = prompt(B=2, T=C)
    torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-5)
    # the weights path (scaled_dot_product_attention written out) and its maps, too
    for a, b in zip(model.attention_maps(x), reference.attention_maps(x), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("G", [1, 2])
def test_gqa_attention_against_torch_sdpa_with_enable_gqa(G):
    torch.manual_seed(0)
    attn = MultiHeadAttention(d_model=32, n_heads=4, n_kv_heads=G).eval()
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(3))
    q, k, v = attn.qkv(x).split([32, 8 * G, 8 * G], dim=-1)
    q = q.view(2, 7, 4, 8).transpose(1, 2)  # (B, H, T, Dh)
    k, v = (z.view(2, 7, G, 8).transpose(1, 2) for z in (k, v))  # (B, G, T, Dh)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(4 // G, dim=1), v.repeat_interleave(4 // G, dim=1), is_causal=True)
    ref = attn.proj(ref.transpose(1, 2).reshape(2, 7, 32))
    torch.testing.assert_close(attn(x), ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(attn(x, need_weights=True)[0], ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("positional", POSITIONAL)
@pytest.mark.parametrize("G", [1, 2, 4])
def test_gqa_cached_equals_uncached(positional, G):
    model = tiny(positional, n_kv_heads=G, qk_norm=positional == "rope")
    p = prompt(B=3, T=5)
    cached = generate(model, p, 2 * C, do_sample=False)  # past the context: the window slides
    assert torch.equal(cached, generate(model, p, 2 * C, do_sample=False, use_cache=False))
    x = prompt(B=2, T=C)
    cache = KVCache.for_model(model, batch_size=2)
    steps = [model(x[:, :6], cache=cache)] + [model(x[:, t : t + 1], offset=t, cache=cache) for t in range(6, C)]
    torch.testing.assert_close(torch.cat(steps, dim=1), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("G", [1, 2, 4])
def test_cache_holds_n_kv_heads_heads(G):
    model = tiny("rope", n_kv_heads=G)
    cache = KVCache.for_model(model, batch_size=3)
    model(prompt(B=3, T=5), cache=cache)
    assert all(layer.k.shape == layer.v.shape == (3, G, C, 8) for layer in cache.layers)
    assert cache.nbytes() == kv_cache_bytes(3, 3, G, C, 8, 4)
    full = KVCache.for_model(tiny("rope"), batch_size=3)
    assert full.nbytes() == cache.nbytes() * (H // G)  # the cache shrinks by n_heads / n_kv_heads


# --- the offset causal mask, truncation ------------------------------------------------------------------------------

@pytest.mark.parametrize("T, offset", [(1, 0), (3, 0), (1, 5), (3, 4)])
def test_offset_causal_mask_is_the_last_rows_of_the_full_mask(T, offset):
    full = torch.ones(offset + T, offset + T).tril().bool()  # hand-built reference
    assert torch.equal(causal_mask(T, offset=offset), full[offset:])
    with pytest.raises(ValueError, match="offset"):
        causal_mask(2, offset=-1)


@pytest.mark.parametrize("concat", [False, True])
def test_truncate_then_continue_equals_a_fresh_forward(concat):
    model = tiny("rope", n_kv_heads=2)
    x = prompt(B=2, T=9)
    cache = KVCache.for_model(model, batch_size=2, concat=concat)
    model(x, cache=cache)
    cache.truncate(6)  # forget positions 6..8 (as a rejected speculative draft would be)
    assert cache.length == 6
    y = torch.flip(x[:, 6:], dims=[0])  # other tokens at positions 6..8
    torch.testing.assert_close(model(y, offset=6, cache=cache), model(torch.cat([x[:, :6], y], 1))[:, 6:],
                               atol=1e-5, rtol=1e-5)
    for bad in (-1, 10, 2.0):
        with pytest.raises(ValueError, match="length must be an int"):
            cache.truncate(bad)
    cache.truncate(0)
    assert cache.length == 0


# --- cost model: FLOPs against PyTorch's counter, bytes against the tensors -----------------------------------------

@pytest.mark.parametrize("kw", [dict(), dict(n_kv_heads=1, mlp="swiglu", tie_weights=False), dict(n_kv_heads=2)])
def test_linear_flops_match_flop_counter(kw):
    from torch.utils.flop_counter import FlopCounterMode

    model = tiny("rope", **kw)
    with FlopCounterMode(display=False) as counter:
        model(prompt(B=1, T=10))
    counted = sum(n for op, n in counter.get_flop_counts()["Global"].items() if str(op) in ("aten.addmm", "aten.mm"))
    assert counted == flops_per_new_token(model.config, 10, use_cache=False)[0]


@pytest.mark.parametrize("G", [1, 4])
def test_forward_cost_bytes_are_the_weights_and_the_cache(G):
    model = tiny("learned", n_kv_heads=G)
    c = model.config
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    weights += model.tok_emb.weight.numel()  # the tied head reads the embedding matrix
    cache = KVCache.for_model(model, batch_size=3, max_len=9)
    model(prompt(B=3, T=9), cache=cache)  # every slot filled: the keys and values one forward over 9 reads
    flops, nbytes = forward_cost(c, new_tokens=1, cached=8, batch_size=3)
    assert nbytes == 4 * weights + cache.nbytes()
    assert flops == 3 * sum(flops_per_new_token(c, 9, use_cache=True))
    prefill_flops, prefill_bytes = forward_cost(c, new_tokens=9, batch_size=3)
    assert prefill_bytes == nbytes  # the same weights and cache, read once
    assert prefill_flops == 3 * sum(flops_per_new_token(c, 9, use_cache=False))  # dense attention both ways
    with pytest.raises(ValueError, match="new_tokens"):
        forward_cost(c, 0)
    with pytest.raises(ValueError, match="batch_size"):
        forward_cost(c, 1, batch_size=0)


def test_decode_intensity_formula():
    # one token per weight: 2 FLOPs per 4 bytes; the batch multiplies it; attention reads its own cache
    c = GPTConfig(vocab_size=V, context_length=64, d_model=64, n_layers=2, n_heads=8, n_kv_heads=2)
    flops, nbytes = forward_cost(c, 1, cached=0)
    assert 0.4 < flops / nbytes < 0.55
    f8, b8 = forward_cost(c, 1, cached=0, batch_size=8)
    assert 7 < (f8 / b8) / (flops / nbytes) <= 8


def test_compare_tokens_per_second_times_every_variant():
    model = tiny("rope")
    speed = compare_tokens_per_second(model, prompt(B=2, T=3), 4, {"cache": {}, "none": {"use_cache": False}})
    assert set(speed) == {"cache", "none"} and all(v > 0 for v in speed.values())
    with pytest.raises(TypeError, match="variants"):
        compare_tokens_per_second(model, prompt(), 2, {})
    with pytest.raises(ValueError, match="repeats"):
        compare_tokens_per_second(model, prompt(), 2, {"a": {}}, repeats=0)


def test_bench_prefill_decode_rows():
    from lmcourse.bench.kv_cache import forward_seconds, prefill_decode, read_bytes_per_second

    model = tiny("learned")
    rows = prefill_decode(model, prompt_tokens=6, batch_sizes=(1, 2), repeats=1)
    assert [(r["phase"], r["batch"], r["tokens"]) for r in rows] == [("prefill", 1, 6), ("decode", 1, 1),
                                                                      ("decode", 2, 2)]
    assert rows[0]["intensity"] > rows[1]["intensity"] and all(r["seconds"] > 0 for r in rows)
    assert forward_seconds(model, 1, 1, cached=C - 1, repeats=1) > 0  # fills the context exactly
    assert read_bytes_per_second(4096, repeats=1) > 0
    with pytest.raises(ValueError, match="cached"):
        forward_seconds(model, 1, 1, cached=-1)


def test_bench_linear_layers_counts_every_matrix_product_of_the_blocks():
    from lmcourse.bench.kv_cache import linear_layers

    model = tiny("learned")
    c = model.config
    rows = linear_layers(model, rows=(1, 4), repeats=1)
    per_layer = 12 * c.d_model**2  # qkv 3D^2, output D^2, MLP 8D^2 weights
    assert [r["rows"] for r in rows] == [1, 4]
    assert [r["flops"] for r in rows] == [2 * m * c.n_layers * per_layer for m in (1, 4)]
    assert rows[1]["intensity"] > rows[0]["intensity"] and all(r["seconds"] > 0 for r in rows)
    with pytest.raises(ValueError, match="rows"):
        linear_layers(model, rows=(0,))


def test_generate_passes_min_p_to_sampling():
    # min_p = 1 keeps only the most likely token: sampling becomes greedy decoding
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, context_length=16, d_model=16, n_layers=1, n_heads=2)).eval()
    prompt = torch.tensor([[1, 2, 3]])
    greedy = generate(model, prompt, 10, do_sample=False)
    sampled = generate(model, prompt, 10, min_p=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sampled, greedy)
    loose = [generate(model, prompt, 10, min_p=0.0, generator=torch.Generator().manual_seed(s)) for s in range(5)]
    assert any(not torch.equal(x, greedy) for x in loose)


# ------------------------------------------------------------------------ the quantised cache


@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_cache_against_a_float64_reference(bits):
    g = torch.Generator().manual_seed(3)
    k, v = torch.randn(2, 3, 5, 8, generator=g), torch.randn(2, 3, 5, 8, generator=g)
    k[0, 1, 2] = 0.0  # an all-zero vector stays exactly zero
    c = QuantizedLayerKVCache(2, 3, 9, 8, bits=bits)
    got_k, got_v = c.append(k[:, :, :3], v[:, :, :3])
    got_k, got_v = c.append(k[:, :, 3:], v[:, :, 3:])
    top = 2 ** (bits - 1) - 1
    for x, got, codes in zip((k, v), (got_k, got_v), c.codes(), strict=True):
        x64 = x.double()
        scale = x64.abs().amax(-1, keepdim=True) / top
        want = torch.where(scale > 0, torch.round(x64 / scale.clamp_min(1e-300)) * scale, 0.0)
        assert torch.allclose(got.double(), want, atol=1e-6)
        assert codes.dtype == torch.int8 and codes.shape == x.shape
        tops = codes.abs().amax(-1)[scale.squeeze(-1) > 0]  # every nonzero vector's largest entry: the top code
        assert tops.numel() >= 29 and bool((tops == top).all())
        assert (got.double() - x64).abs().le(scale / 2 + 1e-6).all()  # the rounding bound
    assert torch.equal(got_k[0, 1, 2], torch.zeros(8)) and c.length == 5


def test_quantised_cache_one_pass_equals_decoding_token_by_token():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=20, context_length=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                      positional="rope")).eval()
    ids = torch.randint(0, 20, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = m(ids, cache=KVCache.for_model(m, 3, bits=4))
        cache = KVCache.for_model(m, 3, bits=4)
        steps = torch.cat([m(ids[:, t:t + 1], offset=t, cache=cache) for t in range(12)], dim=1)
        exact = m(ids)
    assert torch.allclose(whole, steps, atol=1e-5)
    assert not torch.allclose(whole, exact, atol=1e-3)  # 4 bits do change the logits
    assert cache.layers[0].qk.shape == (3, 2, 16, 4)  # (B, G, T, Dh / 2): grouped heads, two codes a byte
    assert cache.layers[0].codes()[0].shape == (3, 2, 12, 8)


def test_quantised_cache_sizes_and_bad_arguments():
    m = GPT(GPTConfig(vocab_size=20, context_length=16, d_model=32, n_layers=2, n_heads=4))
    full = KVCache.for_model(m, 1).nbytes()
    assert full == 2 * 2 * 16 * 32 * 4  # layers x (k, v) x T x D x float32
    # codes (bits each) plus one float32 scale per vector of Dh = 8 numbers
    assert KVCache.for_model(m, 1, bits=8).nbytes() == 2 * 2 * 16 * 4 * (8 + 4)
    assert KVCache.for_model(m, 1, bits=4).nbytes() == 2 * 2 * 16 * 4 * (4 + 4)  # two codes per byte
    layer = KVCache.for_model(m, 1, bits=4).layers[0]
    assert layer.nbytes() == sum(t.numel() * t.element_size() for t in (layer.qk, layer.qv, layer.sk, layer.sv))
    with pytest.raises(ValueError, match="d_head must be even"):
        QuantizedLayerKVCache(1, 1, 4, 3, bits=4)
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        KVCache.for_model(m, 1, bits=2)
    with pytest.raises(ValueError, match="not both"):
        KVCache.for_model(m, 1, concat=True, bits=8)
    c = QuantizedLayerKVCache(1, 4, 4, 8)
    with pytest.raises(ValueError, match="holds 4 positions"):
        c.append(torch.zeros(1, 4, 5, 8), torch.zeros(1, 4, 5, 8))
    with pytest.raises(ValueError, match="do not fit"):
        c.append(torch.zeros(1, 2, 1, 8), torch.zeros(1, 2, 1, 8))
