"""The instruction set: the template, loss masking, exact match by teacher forcing == greedy decoding."""

import pytest
import torch

from lmcourse.data import load_shakespeare, split_plays
from lmcourse.generation import generate
from lmcourse.instructions import (
    END,
    IGNORE_INDEX,
    Example,
    baseline_accuracy,
    build_instructions,
    chat,
    encode,
    encode_examples,
    exact_match,
    play_examples,
    response_correct,
    shortest_shots,
)
from lmcourse.tokenization import shakespeare_char_tokenizer
from lmcourse.train import TrainConfig, train
from lmcourse.transformer import GPT, GPTConfig

TOK = shakespeare_char_tokenizer()


def test_markers_never_occur_in_the_plays():
    text = load_shakespeare()
    for marker in ("$u", "$b", "$e"):
        assert marker not in text


def test_mask_covers_exactly_the_prompt():
    prefix, response = chat("Who next?\nA:\nhi\nB:\nho"), "A" + END
    x, y = encode(prefix, response, TOK)
    kept = [t for t in y if t != IGNORE_INDEX]
    assert TOK.decode(kept) == response
    _, y_all = encode(prefix, response, TOK, mask_prompt=False)
    assert IGNORE_INDEX not in y_all and len(y_all) == len(x)


def test_splits_hold_out_whole_plays():
    train_ex, val_ex = build_instructions("train", per_task=50), build_instructions("val", per_task=50)
    assert {e.task for e in val_ex} == {"speaker", "lastword", "form"}
    assert sum(e.answer == "verse" for e in val_ex if e.task == "form") == 25
    assert not set(split_plays("train")) & set(split_plays("val"))
    assert len(train_ex) == len(val_ex) == 150


def test_examples_fit_the_context_one_shot():
    shots = shortest_shots(build_instructions("train", per_task=200))
    rows = encode_examples(build_instructions("val"), TOK, context_length=128, shots=shots)
    assert rows.shape[1:] == (2, 128)
    with pytest.raises(ValueError, match="context_length"):
        encode_examples([Example("lastword", "x" * 200, "y")], TOK)


def test_teacher_forced_exact_match_equals_greedy_decoding():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=75, context_length=128, d_model=32, n_layers=2, n_heads=2))
    examples = build_instructions("val", per_task=4)
    rows = encode_examples(examples, TOK)
    data = encode_examples(build_instructions("train", per_task=40), TOK)
    train(model, data, data, TrainConfig(steps=40, batch_size=8, warmup_steps=1, eval_every=40, eval_batches=1,
                                         lr=3e-3, objective="sft"))
    fast = response_correct(model, rows)
    for e, ok in zip(examples, fast.tolist(), strict=True):
        ids = torch.tensor([TOK.encode(chat(e.prompt))])
        out = generate(model, ids, len(e.answer) + len(END), do_sample=False)
        assert (TOK.decode(out[0, ids.shape[1]:].tolist()) == e.answer + END) == ok
    scores = exact_match(model, examples, TOK)
    assert set(scores) == {"speaker", "lastword", "form"}


def test_baselines_and_play_examples():
    text = "A:\nGood morrow, sir, and welcome home to Rome\n\nB:\nFie\n\nA:\nGo"
    assert [e.task for e in play_examples(text)] == ["speaker", "lastword"]
    train_ex = [Example("form", "x", "verse")] * 3 + [Example("speaker", "A:\nx\nB:\ny", "A")]
    test_ex = [Example("form", "y", "prose"), Example("speaker", "C:\nx\nB:\ny", "B")]
    assert baseline_accuracy(train_ex, test_ex) == {"speaker": 0.0, "form": 0.0}
