"""lmcourse: the companion package of the language-modeling course.

One module per concept, in the order the book teaches them:

* :mod:`lmcourse.data`: the Shakespeare corpus, splits by whole plays, batching.
* :mod:`lmcourse.tokenization`: character and byte-level BPE tokenizers.
* :mod:`lmcourse.metrics`: NLL, perplexity, bits per character.
* :mod:`lmcourse.chain_rule`: the chain rule with uniform, unigram and bigram counts.
* :mod:`lmcourse.ngram`: n-gram models, smoothing and Kneser-Ney.
* :mod:`lmcourse.lstm`: the LSTM cell from its gates, the LSTM language model, TBPTT.
* :mod:`lmcourse.attention`: scaled dot-product attention, the causal mask, multi-head attention.
* :mod:`lmcourse.positions`: learned, sinusoidal, rotary (RoPE) and ALiBi positions.
* :mod:`lmcourse.transformer`: the decoder-only GPT, with optional weight tying.
* :mod:`lmcourse.train`: the training engine (AdamW, warmup + cosine, checkpoints, exact resume, torchrun).
* :mod:`lmcourse.runs`: the named runs, the shipped GPT and ``python -m lmcourse.train``.
* :mod:`lmcourse.generation`: the KV cache and ``generate()``.
* :mod:`lmcourse.decoding`: temperature, top-k, top-p, repetition penalty, beam search.
* :mod:`lmcourse.mlm`: masked language modeling (BERT-style masking, encoder, fill-mask).
* :mod:`lmcourse.widgets`: interactive figures that work in the static HTML book.
* :mod:`lmcourse.device`: which device the course runs on.
* :mod:`lmcourse.exercises`: writes ``exercises/`` from ``solutions/``.
* :mod:`lmcourse.grade`: grades submitted exercise notebooks.
* :mod:`lmcourse.notebooks`: executes the book's notebooks and stores stable outputs.
* :mod:`lmcourse.bench`: benchmarks, ``python -m lmcourse.bench NAME``.
"""

__version__ = "0.1.0"
