"""Chapter 5's extrapolation experiment: the models it builds and how it scores them."""

import json

import pytest
import torch

from lmcourse.experiments.extrapolation import (
    KINDS,
    ROPE_VARIANTS,
    build,
    embedding_sizes,
    loss_by_position,
    main,
    rope_variants,
    score,
    score_disjoint,
    summarise,
)
from lmcourse.positions import SinusoidalPositions, rope_frequencies, rope_wavelengths
from lmcourse.train import stream_token_nll
from lmcourse.transformer import GPTConfig

SMALL = GPTConfig(vocab_size=11, context_length=32, d_model=16, n_layers=1, n_heads=2)


def test_build_differs_only_in_positions():
    models = {}
    for kind in KINDS:
        torch.manual_seed(0)
        models[kind] = build(kind, SMALL)
    assert models["none"].pos_emb is None and models["none"].rotary is None and models["none"].alibi is None
    scaled, unscaled = models["sinusoidal"].pos_emb, models["sinusoidal, unscaled"].pos_emb
    assert isinstance(unscaled, SinusoidalPositions) and unscaled.scale == 1.0
    torch.testing.assert_close(scaled(8) / scaled.scale, unscaled(8))  # same table, other size
    assert embedding_sizes(models["sinusoidal, unscaled"], 8)["position"] == pytest.approx(8 ** 0.5, rel=1e-4)
    assert embedding_sizes(models["rope"], 8)["position"] == 0.0
    sizes = {kind: m.num_params() for kind, m in models.items()}
    assert sizes["learned"] - sizes["none"] == 32 * 16  # the one table with parameters
    assert len({n for k, n in sizes.items() if k != "learned"}) == 1
    with pytest.raises(ValueError, match="kind must be one of"):
        build("relative", SMALL)


def test_the_papers_sinusoidal_arm_scales_the_input_embeddings_only():
    torch.manual_seed(0)
    paper = build("sinusoidal, x sqrt(D)", SMALL)
    torch.manual_seed(0)
    unscaled = build("sinusoidal, unscaled", SMALL)
    ids = torch.tensor([[1, 2, 3]])
    # same initial weights; the input is the embedding times sqrt(D), the table at full size
    torch.testing.assert_close(paper.tok_emb(ids), unscaled.tok_emb(ids) * 16 ** 0.5)
    assert paper.pos_emb.scale == 1.0 and paper.head is None
    h = torch.randn(1, 3, 16, generator=torch.Generator().manual_seed(0))  # the tied output reads the rows unscaled
    torch.testing.assert_close(paper.logits(h), unscaled.logits(h))


def test_every_length_scores_the_same_targets():
    torch.manual_seed(0)
    model = build("alibi", SMALL).eval()
    ids = torch.randint(0, 11, (300,), generator=torch.Generator().manual_seed(1))
    got = score(model, ids, (8, 32))
    for T in (8, 32):
        nll = stream_token_nll(model, ids, T, stride=T // 4)
        assert nll.shape == (299,)  # every target after the first, whatever T
        assert got[T] == pytest.approx(nll.mean().item())


def test_disjoint_windows_and_the_loss_by_position_against_direct_windows():
    torch.manual_seed(0)
    model = build("rope", SMALL).eval()
    ids = torch.randint(0, 11, (200,), generator=torch.Generator().manual_seed(2))
    assert score_disjoint(model, ids, (8,))[8] == pytest.approx(stream_token_nll(model, ids, 8, stride=8).mean().item())
    curve = loss_by_position(model, ids, 16, stride=5)
    starts = range(0, 200 - 16, 5)
    with torch.no_grad():
        direct = torch.stack([torch.nn.functional.cross_entropy(model(ids[s:s + 16][None])[0], ids[s + 1:s + 17],
                                                                reduction="none") for s in starts]).mean(0)
    torch.testing.assert_close(curve, direct.double(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="more than T tokens"):
        loss_by_position(model, ids[:10], 16, stride=1)


def test_rope_variants_slow_exactly_the_pairs_they_name():
    variants = rope_variants(16, trained_length=32, factor=4.0)
    assert list(variants) == list(ROPE_VARIANTS)
    theta, slow = rope_frequencies(16), rope_wavelengths(16) > 32

    def turn_per_position(rotary):  # the angle each pair turns by from position 0 to 1 (float32 tables)
        cos, sin = rotary.angles(2)
        return torch.atan2(sin[1], cos[1]).double()

    expected = {"plain": theta, "interpolated (PI)": theta / 4,
                "slow pairs interpolated": torch.where(slow, theta / 4, theta),
                "fast pairs interpolated": torch.where(slow, theta, theta / 4)}
    for name, want in expected.items():
        torch.testing.assert_close(turn_per_position(variants[name]), want, rtol=1e-5, atol=1e-7)
    assert variants["YaRN"].attention_scale > 1 == variants["NTK-aware"].attention_scale


def test_summarise_means_and_spreads():
    runs = [{"nll": {"8": 2.0, "32": 2.5}}, {"nll": {"8": 3.0, "32": 3.1}}]
    out = summarise(runs, (8, 32))
    assert out["mean"] == {"8": 2.5, "32": 2.8, "change": 0.3}
    assert out["std"]["change"] == pytest.approx(((0.5 - 0.3) ** 2 + (0.1 - 0.3) ** 2) ** 0.5, abs=1e-4)


@pytest.mark.slow
def test_command_writes_a_table_it_can_reproduce(tmp_path):
    out = tmp_path / "extrapolation.json"
    assert main(["--seeds", "1", "--steps", "2", "--fine-tune-steps", "2", "--eval-chars", "300",
                 "--kinds", "none", "rope", "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    assert [r["kind"] for r in table["rows"]] == ["none", "rope"]
    assert table["command"].startswith("python -m lmcourse extrapolation --seeds 1 --steps 2 --fine-tune-steps 2 "
                                       "--eval-chars 300")
    run = table["rows"][1]["runs"][0]
    assert len(run["by_position"]) == table["lengths"][-1]
    assert set(run["nll_disjoint"]) == set(run["nll"]) == {str(T) for T in table["lengths"]}
    assert list(run["rope_variants"]) == list(ROPE_VARIANTS)
    assert set(run["rope_variants"]["YaRN"]) == {"as is", "fine-tuned"}
    assert "rope_variants" not in table["rows"][0]["runs"][0]
    with pytest.raises(SystemExit):
        main(["--seeds", "0"])
