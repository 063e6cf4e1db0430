"""Chapter 14's experiment command: the plan, the replay mix, what each method trains."""

import pytest
import torch

from lmcourse.experiments.adaptation import BETAS, SEEDS, planned, prepare, replay_mix
from lmcourse.transformer import GPT, GPTConfig


def test_plan_has_three_seeds_of_every_method():
    runs = planned("all")
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    assert sum(r.part == "cpt" for r in runs) == 4 * len(SEEDS)
    assert sum(r.part == "dpo" and r.method == "full" for r in runs) == len(BETAS) * len(SEEDS)
    with pytest.raises(ValueError, match="part"):
        planned("rlhf")


def test_replay_share():
    mix = replay_mix(torch.zeros(800, dtype=torch.long), torch.ones(1000, dtype=torch.long), 0.2)
    assert len(mix) == 1000 and mix.float().mean().item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="share"):
        replay_mix(torch.zeros(8), torch.ones(8), 1.0)


def test_prepare_trains_what_each_method_says():
    def fresh():
        torch.manual_seed(0)
        return GPT(GPTConfig(vocab_size=11, context_length=8, d_model=16, n_layers=1, n_heads=2))

    m = fresh()
    assert prepare(m, "full") == m.num_params()
    assert prepare(fresh(), "embedding") == 11 * 16
    assert 0 < prepare(fresh(), "lora") < m.num_params()
    with pytest.raises(ValueError, match="unknown method"):
        prepare(fresh(), "adapters")
