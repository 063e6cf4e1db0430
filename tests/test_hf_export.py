"""``python -m lmcourse export``: the shipped GPT as a Hugging Face GPT-2 that ``transformers`` loads.

The references are Hugging Face's own loaders and generation: ``GPT2LMHeadModel.from_pretrained``
gives the course model's logits in float64, ``pipeline("text-generation")`` the same greedy
text as :func:`lmcourse.generation.generate`, ``AutoTokenizer`` the course tokenizer's ids.
The export itself needs no ``transformers``; the tests that load it skip without it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from lmcourse import hf_export, load_pretrained
from lmcourse.__main__ import usage
from lmcourse.data import load_shakespeare
from lmcourse.generation import generate
from lmcourse.tokenization import shakespeare_char_tokenizer

FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """gpt_char exported once by the command, into an existing empty folder (which the export accepts),
    in a Python where ``import transformers`` fails: exporting does not need it."""
    out = tmp_path_factory.mktemp("export") / "gpt_char_hf"
    out.mkdir()
    code = ("import sys; sys.modules['transformers'] = None; from lmcourse.__main__ import main; "
            f"sys.exit(main(['export', 'gpt_char', {str(out)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}: config.json, model.safetensors")
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert [p.name for p in out.parent.iterdir()] == ["gpt_char_hf"]  # no temporary folder left beside it
    return out


@pytest.fixture(scope="module")
def course_tokenizer():
    return shakespeare_char_tokenizer()


def test_the_command_is_listed():
    assert any(line.split()[:1] == ["export"] for line in usage().splitlines())


def test_the_file_holds_the_shipped_weights_in_float32(exported):
    tensors = load_file(exported / "model.safetensors")
    model = load_pretrained("gpt_char")
    ours = model.state_dict()
    assert {t.dtype for t in tensors.values()} == {torch.float32}
    assert "lm_head.weight" not in tensors  # tied: the head is the embedding
    assert len(tensors) == len(ours)
    assert sum(t.numel() for t in tensors.values()) == model.num_params()
    wte, c_attn = tensors["transformer.wte.weight"], tensors["transformer.h.0.attn.c_attn.weight"]
    assert torch.equal(wte, ours["tok_emb.weight"])
    assert torch.equal(c_attn, ours["blocks.0.attn.qkv.weight"].T)  # Conv1D: (in, out)
    assert torch.equal(wte.half().float(), wte)  # float16 values, widened exactly
    config = json.loads((exported / "config.json").read_text())
    assert config["activation_function"] == "gelu" and config["tie_word_embeddings"] is True
    assert (config["n_positions"], config["n_embd"], config["vocab_size"]) == (128, 160, 75)


def test_tokenizer_equals_the_course_tokenizer_on_validation_text(exported, course_tokenizer):
    text = load_shakespeare("val")[:5000]
    ids = course_tokenizer.encode(text)
    assert "\n\n" in text and "  " not in text  # blank lines in the text; runs of spaces below
    odd = "a  b\n\n\n  c \n"
    # the tokenizers library alone (no transformers): tokenizer.json
    tk = Tokenizer.from_file(str(exported / "tokenizer.json"))
    assert tk.encode(text).ids == ids
    assert tk.decode(ids) == text
    assert tk.decode(tk.encode(odd).ids) == odd
    # transformers' AutoTokenizer
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(exported)
    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    assert len(tok) == course_tokenizer.vocab_size
    assert tok(text)["input_ids"] == ids
    assert tok.decode(ids) == text  # no spaces put between characters
    assert tok.decode(tok(odd)["input_ids"]) == odd
    assert tok.convert_ids_to_tokens(course_tokenizer.encode("To be")) == list("To be")
    # a character outside the vocabulary is refused by both, not dropped or replaced
    with pytest.raises(ValueError, match="not in the vocabulary"):
        course_tokenizer.encode("café")
    with pytest.raises(Exception, match=r"Missing \[UNK\]"):
        tok("café")


def test_logits_in_float64_equal_the_course_model(exported, course_tokenizer):
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(exported)
    assert hf.dtype == torch.float32
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # tied
    hf = hf.double().eval()
    ours = load_pretrained("gpt_char").double()
    text = load_shakespeare("val")[1000:1128]  # a full context of real text
    ids = torch.tensor([course_tokenizer.encode(text)])
    with torch.no_grad():
        expected = ours(ids)
        got = hf(input_ids=ids).logits
    diff = (got - expected).abs().max().item()
    print(f"max |logit difference| in float64: {diff:.3g}")
    assert expected.abs().max() > 1.0  # real logits, not a near-zero output
    assert diff <= 1e-10


def test_pipeline_greedy_text_equals_the_course_generate(exported, course_tokenizer):
    transformers = pytest.importorskip("transformers")
    prompt = load_shakespeare("val")[:40]
    pipe = transformers.pipeline("text-generation", model=str(exported), tokenizer=str(exported), device="cpu")
    theirs = pipe(prompt, do_sample=False, max_new_tokens=60)[0]["generated_text"]
    ours = generate(load_pretrained("gpt_char"), torch.tensor([course_tokenizer.encode(prompt)]), 60,
                    do_sample=False)
    ours = course_tokenizer.decode(ours[0].tolist())
    print(f"greedy: {ours!r}")
    assert len(ours) == 40 + 60
    assert theirs == ours


def lmcourse_export(*args):
    return subprocess.run([sys.executable, "-m", "lmcourse", "export", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result, *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for part in expected:
        assert part in result.stderr, result.stderr


@pytest.mark.parametrize("name, expected", [
    ("gpt_modern", ("cannot export gpt_modern", "RoPE", "RMSNorm", "ReLU^2", "QK-norm", "bias-free", "gpt_char")),
    ("mlm_char", ("cannot export mlm_char", "bidirectional", "masked", "gpt_char")),
    ("lstm_char", ("cannot export lstm_char", "LSTM", "gpt_char")),
    ("gpt_5", ("no shipped model 'gpt_5'", "lstm_char, gpt_char, gpt_char_untied, mlm_char, gpt_modern",
               "these export: gpt_char, gpt_char_untied")),
])
def test_a_model_without_a_gpt2_form_is_a_one_line_error(tmp_path, name, expected):
    out = tmp_path / "out"
    assert_one_line_error(lmcourse_export(name, out), *expected)
    assert not out.exists()


def test_an_existing_folder_or_file_is_never_overwritten(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    assert_one_line_error(lmcourse_export("gpt_char", folder), "already exists", "never overwrites")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "my notes"
    file = tmp_path / "model.bin"
    file.write_bytes(b"mine")
    assert_one_line_error(lmcourse_export("gpt_char", file), "already exists")
    assert file.read_bytes() == b"mine"


def test_without_safetensors_the_error_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hf_export, "save_file", None)
    assert hf_export.main(["gpt_char", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == "error: writing model.safetensors needs the safetensors package: pip install safetensors\n"
    assert not (tmp_path / "out").exists()
