"""The course's stored experiments: drivers that train many runs and keep their results.

Each module trains a family of models (several seeds, several settings) through the
one engine (:mod:`lmcourse.train`), scores them, and writes a table into
``lmcourse/checkpoints/`` together with the command that reproduces it; the chapter
reads the table instead of training for minutes. Each is a command of
``python -m lmcourse``:

* :mod:`lmcourse.experiments.extrapolation` (``extrapolation``): chapter 5, position
  schemes trained at one length and read at longer ones.
* :mod:`lmcourse.experiments.comparisons` (``experiments``): chapters 6 and 7, tied vs
  untied heads, pre- vs post-norm, and training without warmup or clipping.
* :mod:`lmcourse.experiments.ablation` (``ablation``): chapter 11, today's recipe one
  change at a time.
* :mod:`lmcourse.experiments.scaling` (``scaling``): chapter 12, GPTs of many sizes at
  several compute budgets (an IsoFLOP grid), and data-constrained runs.

The concepts they measure live in the modules named after them (``positions``,
``transformer``, ``train``, ``optim``); nothing here is imported by those.
"""
