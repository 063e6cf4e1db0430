"""lmcourse: the companion package of the language-modeling course.

One module per concept, in the order the book teaches them:

* :mod:`lmcourse.data`: the Shakespeare corpus, splits by whole plays, batching.
* :mod:`lmcourse.tokenization`: character and byte-level BPE tokenizers.
* :mod:`lmcourse.metrics`: NLL, perplexity, bits per character.
* :mod:`lmcourse.chain_rule`: the chain rule with uniform, unigram and bigram counts.
* :mod:`lmcourse.ngram`: n-gram models, smoothing and Kneser-Ney.
* :mod:`lmcourse.lstm`: the LSTM cell from its gates, the LSTM language model, TBPTT.
* :mod:`lmcourse.attention`: scaled dot-product attention, the causal mask, multi-head attention.
* :mod:`lmcourse.costs`: what a sequence layer costs: sequential depth, FLOPs, memory (chapters 3 and 4).
* :mod:`lmcourse.positions`: learned, sinusoidal, rotary (RoPE) and ALiBi positions.
* :mod:`lmcourse.transformer`: the transformer (causal GPT or bidirectional encoder), tying, modern options.
* :mod:`lmcourse.optim`: Muon (orthogonalised momentum) beside AdamW.
* :mod:`lmcourse.objectives`: what the engine trains for: next token, a stream with carried state, masked tokens.
* :mod:`lmcourse.train`: the one training engine (warmup + cosine, clipping, accumulation, exact resume, torchrun).
* :mod:`lmcourse.runs`: the named runs, the registry of shipped models, ``python -m lmcourse train``.
* :mod:`lmcourse.hf_export`: the GPT as a Hugging Face GPT-2 folder, ``python -m lmcourse export``.
* :mod:`lmcourse.copying`: first and later occurrences of new words, a cache n-gram, induction-head probes,
  head ablation (chapter 11).
* :mod:`lmcourse.renaming`: training plays with their characters renamed, so that copying pays (chapter 11).
* :mod:`lmcourse.generation`: the KV cache and ``generate()``.
* :mod:`lmcourse.decoding`: temperature, top-k, top-p, min-p, repetition penalty, beam search.
* :mod:`lmcourse.speculative`: speculative decoding, a draft model checked by the target (chapter 9).
* :mod:`lmcourse.mlm`: masked language modeling (BERT-style masking, encoder, fill-mask).
* :mod:`lmcourse.finetune`: a classifier head on the encoder: linear probe, fine-tuning, from scratch (chapter 10).
* :mod:`lmcourse.scaling_laws`: loss against parameters and data, L(N, D) fitted as Chinchilla does (chapter 12).
* :mod:`lmcourse.widgets`: interactive figures that work in the static HTML book.
* :mod:`lmcourse.device`: which device the course runs on.
* :mod:`lmcourse.bench`: benchmarks, ``python -m lmcourse bench NAME``.
* :mod:`lmcourse.experiments`: the stored experiments, each a command that trains many runs and keeps
  their table (chapter 5's extrapolation, chapters 6-7's comparisons, chapter 11's ablation).

Course tooling lives apart, in :mod:`lmcourse.course`: exercise generation
(``exercises``), the grader (``grade``, ``grade_runner``), the learner's
self-check (``check``) and the notebook runner (``notebooks``).

One command line for all of it: ``python -m lmcourse COMMAND`` (``train``,
``ablation``, ``check``, ``grade``, ``exercises``, ``notebooks``, ``bench``; ``--help`` lists them).
"""

from .runs import load_pretrained

__all__ = ["load_pretrained"]
__version__ = "0.1.0"
