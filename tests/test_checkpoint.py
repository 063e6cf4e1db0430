"""Checkpoints: exact resume, atomic writes, clear errors."""

import os

import pytest
import torch

from lmcourse import load_pretrained
from lmcourse.shipped import atomic_save, save_weights
from lmcourse.train import TrainConfig, load_checkpoint, train
from lmcourse.transformer import GPT, GPTConfig


def _data():
    g = torch.Generator().manual_seed(0)
    text = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7] * 64)
    return torch.where(torch.rand(len(text), generator=g) < 0.1, 8, text)


def _model(d=16):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=9, context_length=16, d_model=d, n_layers=1, n_heads=2, dropout=0.1))


CFG = TrainConfig(steps=30, batch_size=8, context_length=16, lr=1e-2, min_lr=1e-3, warmup_steps=5,
                  eval_every=10, eval_batches=2, grad_accum=2)


def test_stopped_and_resumed_run_is_bit_identical(tmp_path):
    text = _data()
    full = _model()
    h_full = train(full, text[:400], text[400:], CFG)

    ckpt = tmp_path / "run.state.pt"
    part = _model()
    h_part = train(part, text[:400], text[400:], CFG, checkpoint=ckpt, stop_at=13)  # "interrupted" at 13
    assert h_part.steps == [0, 10] and ckpt.is_file()
    assert load_checkpoint(ckpt)["step"] == 13
    torch.manual_seed(999)  # the resumed run must not depend on the RNG state it starts with
    resumed = _model(d=16)
    with torch.no_grad():  # scramble the weights: they must all come from the checkpoint
        for p in resumed.parameters():
            p.normal_()
    h_res = train(resumed, text[:400], text[400:], CFG, checkpoint=ckpt, resume=True)

    assert h_res.steps == h_full.steps == [0, 10, 20, 30]
    assert h_res.train_loss == h_full.train_loss and h_res.val_loss == h_full.val_loss  # exactly
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    assert load_checkpoint(ckpt)["step"] == 30


def test_a_cpu_run_saves_no_cuda_random_state(tmp_path, monkeypatch):
    # on a GPU machine whose notebook already used CUDA, a run on the CPU must save the same
    # random states as on a CPU-only machine (chapter 7 prints them); its resume needs no CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("asked CUDA for its state"))
    ckpt = tmp_path / "run.state.pt"
    train(_model(), _data()[:400], _data()[400:], CFG, device="cpu", checkpoint=ckpt, stop_at=13)
    assert sorted(load_checkpoint(ckpt)["rng"]) == ["batches", "torch"]


def test_resume_with_another_config_or_architecture_says_which(tmp_path):
    text = _data()
    ckpt = tmp_path / "run.state.pt"
    train(_model(), text[:400], text[400:], CFG, checkpoint=ckpt, stop_at=3)
    with pytest.raises(ValueError, match="another TrainConfig.*lr"):
        train(_model(), text[:400], text[400:], TrainConfig(**{**CFG.__dict__, "lr": 5e-3}), checkpoint=ckpt,
              resume=True)
    with pytest.raises(ValueError, match="does not match the architecture"):
        train(_model(d=32), text[:400], text[400:], CFG, checkpoint=ckpt, resume=True)


def test_missing_or_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an lmcourse training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="no model checkpoint"):
        load_pretrained(str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="no shipped model 'nope'; the shipped models are: lstm_char, gpt_char"):
        load_pretrained("nope")


def test_shipped_weights_round_trip_and_mismatch(tmp_path):
    model = _model()
    save_weights(model, tmp_path / "m.pt")
    back = load_pretrained(str(tmp_path / "m.pt"))
    assert not back.training and back.head is None  # tied: the logits use tok_emb.weight
    for a, b in zip(model.state_dict().values(), back.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-3)
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    state["config"]["d_model"] = 32
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not match the architecture"):
        load_pretrained(str(tmp_path / "bad.pt"))


def test_interrupted_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_save({"v": 1}, path)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies in the middle of writing

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"v": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["v"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind


@pytest.mark.parametrize("name", ["lstm_char", "gpt_char", "mlm_char", "gpt_modern"])
def test_load_pretrained_loads_every_shipped_model_in_eval_mode(name):
    import json

    from lmcourse.lstm import LSTMLM
    from lmcourse.runs import shipped_names
    from lmcourse.shipped import CHECKPOINT_DIR, sha256

    assert name in shipped_names()
    model = load_pretrained(name)
    entry = json.loads((CHECKPOINT_DIR / "manifest.json").read_text())[name]
    assert not model.training and type(model).__name__ == entry["model_class"]
    assert sum(p.numel() for p in model.parameters()) == entry["parameters"]
    assert sha256(CHECKPOINT_DIR / entry["file"]) == entry["sha256"]
    assert entry["command"] == f"python -m lmcourse train --config {name}"
    assert isinstance(model, LSTMLM) == (name == "lstm_char")
    if name == "mlm_char":
        assert not model.config.causal


def test_a_missing_shipped_file_names_the_command_that_rebuilds_it(tmp_path, monkeypatch):
    import lmcourse.runs

    monkeypatch.setattr(lmcourse.runs, "CHECKPOINT_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m lmcourse train --config mlm_char"):
        load_pretrained("mlm_char")
