"""Training stage: the run folder (``run``), the loop (``loop``), its state and checkpoints
(``state``, ``checkpoint``), step-exact replay (``replay``), loss, optimiser and loaders.

``run_training`` is the entry point of ``train.py``. Nothing is imported here, so the
prediction stage can load checkpoints without importing the loop.
"""
