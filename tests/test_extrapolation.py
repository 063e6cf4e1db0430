"""Chapter 5's extrapolation experiment: the models it builds and how it scores them."""

import json

import pytest
import torch

from lmcourse.experiments.extrapolation import KINDS, build, embedding_sizes, main, score, summarise
from lmcourse.positions import SinusoidalPositions
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


def test_every_length_scores_the_same_targets():
    torch.manual_seed(0)
    model = build("alibi", SMALL).eval()
    ids = torch.randint(0, 11, (300,), generator=torch.Generator().manual_seed(1))
    got = score(model, ids, (8, 32))
    for T in (8, 32):
        nll = stream_token_nll(model, ids, T, stride=T // 4)
        assert nll.shape == (299,)  # every target after the first, whatever T
        assert got[T] == pytest.approx(nll.mean().item())


def test_summarise_means_and_spreads():
    runs = [{"nll": {"8": 2.0, "32": 2.5}}, {"nll": {"8": 3.0, "32": 3.1}}]
    out = summarise(runs, (8, 32))
    assert out["mean"] == {"8": 2.5, "32": 2.8, "change": 0.3}
    assert out["std"]["change"] == pytest.approx(((0.5 - 0.3) ** 2 + (0.1 - 0.3) ** 2) ** 0.5, abs=1e-4)


@pytest.mark.slow
def test_command_writes_a_table_it_can_reproduce(tmp_path):
    out = tmp_path / "extrapolation.json"
    assert main(["--seeds", "1", "--steps", "2", "--eval-chars", "300", "--kinds", "none", "alibi",
                 "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    assert [r["kind"] for r in table["rows"]] == ["none", "alibi"]
    assert table["command"].startswith("python -m lmcourse extrapolation --seeds 1 --steps 2 --eval-chars 300")
    assert len(table["rows"][0]["runs"][0]["by_position"]) == table["lengths"][-1]
    with pytest.raises(SystemExit):
        main(["--seeds", "0"])
