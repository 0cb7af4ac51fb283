"""The paper's claims reproduced in miniature (``bench/reproduce.py``), one module per job.

- :mod:`~training.reproduce.plan`: budgets, run and evaluation specs, the experiment planner,
  recipe overrides;
- :mod:`~training.reproduce.classical`: the classical conditioner (ground truth blurred + affine);
- :mod:`~training.reproduce.conditioner`: the plug-and-play DPT conditioner, trained by
  ``training.conditioner``;
- :mod:`~training.reproduce.datasets`: the evaluation sets;
- :mod:`~training.reproduce.summary`: the records of a training run and of an evaluation;
- :mod:`~training.reproduce.results`, :mod:`~training.reproduce.claims`,
  :mod:`~training.reproduce.report`: docs/RESULTS.md from the results JSON;
- :mod:`~training.reproduce.runner`: the script's orchestration (resumable).
"""
