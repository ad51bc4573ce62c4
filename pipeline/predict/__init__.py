"""Prediction stage: ``Predictor`` (sliding window, test-time flips, largest component, back to the
source grid) and ``run_test``, the engine of ``test.py``."""

from .predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor"]
