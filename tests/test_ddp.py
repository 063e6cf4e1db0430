"""Scale-out: two CPU processes under torchrun (gloo) train like one process with the same global batch.

This file is also the worker that torchrun launches: ``torchrun ... tests/test_ddp.py OUTDIR``.
"""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lmcourse.lstm import LSTMLM, LSTMConfig
from lmcourse.train import TrainConfig, train
from lmcourse.transformer import GPT, GPTConfig

pytestmark = pytest.mark.slow  # launches torchrun with two processes

CFG = TrainConfig(steps=12, batch_size=8, context_length=16, lr=1e-2, min_lr=1e-3, warmup_steps=2,
                  eval_every=4, eval_batches=2, grad_accum=2)
OBJECTIVES = ("clm", "tbptt", "mlm")  # the GPT, the LSTM (carried state per row) and the masked LM


def _setup(objective: str):
    g = torch.Generator().manual_seed(0)
    text = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8] * 64)
    text = torch.where(torch.rand(len(text), generator=g) < 0.1, 0, text)
    torch.manual_seed(0)
    if objective == "tbptt":
        model = LSTMLM(LSTMConfig(vocab_size=9, embed_dim=8, hidden_size=16, num_layers=1, dropout=0.0))
        cfg = replace(CFG, objective="tbptt", warmup_steps=0)
    else:
        # bias=False: a key bias has an exactly zero gradient (softmax ignores a constant
        # added to a whole row of scores), so Adam would turn float rounding in it into
        # lr-sized steps and two correct runs could drift apart by chance.
        model = GPT(GPTConfig(vocab_size=9, context_length=16, d_model=16, n_layers=1, n_heads=2, bias=False,
                              causal=objective == "clm"))
        cfg = replace(CFG, objective=objective, mask_token_id=0)
    return model, cfg, text[:400], text[400:]


def _worker(out: Path) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    for objective in OBJECTIVES:
        model, cfg, train_ids, val_ids = _setup(objective)
        history = train(model, train_ids, val_ids, cfg, device="cpu")
        torch.save({"state": model.state_dict(), "val_loss": history.val_loss, "train_loss": history.train_loss},
                   out / f"{objective}-rank{dist.get_rank()}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([str(torchrun), "--nproc_per_node", "2", "--standalone", __file__, str(out)],
                   check=True, env=env, timeout=170, capture_output=True)
    return out


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_two_processes_match_one(two_process_runs, objective):
    r0, r1 = (torch.load(two_process_runs / f"{objective}-rank{r}.pt") for r in (0, 1))
    for n, a in r0["state"].items():
        assert torch.equal(a, r1["state"][n]), n  # both ranks end with identical weights

    model, cfg, train_ids, val_ids = _setup(objective)
    history = train(model, train_ids, val_ids, cfg)  # one process, the same global batch of 8
    assert r0["val_loss"] == pytest.approx(history.val_loss, rel=1e-5)
    assert r0["train_loss"] == pytest.approx(history.train_loss, rel=1e-5)
    assert history.val_loss[-1] < history.val_loss[0]  # it learned something
    for n, a in model.state_dict().items():
        assert torch.allclose(a, r0["state"][n], atol=1e-4), n  # Adam magnifies float rounding in tiny gradients


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
