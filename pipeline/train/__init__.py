"""Training stage: the run folder (``run``), the loop (``loop``), its state (``state``; checkpoint
files are ``pipeline.checkpoint``, below training and prediction), step-exact replay (``replay``),
loss, optimiser and loaders.

``run_training`` is the entry point of ``train.py``.
"""
