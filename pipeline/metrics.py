"""``from pipeline.metrics import dice, hd95, nsd, ...``: the metrics API (lives in ``pipeline.evaluate``)."""

from .evaluate.centreline import cldice
from .evaluate.metrics import (accuracy, all_metrics, asd, assd, dice, directed_surface_distances, hd, hd95,
                               jaccard, nsd, overlap_metrics, precision, roc_auc, sensitivity, specificity,
                               surface_distance_metrics)

__all__ = ["accuracy", "all_metrics", "asd", "assd", "cldice", "dice", "directed_surface_distances", "hd", "hd95",
           "jaccard", "nsd", "overlap_metrics", "precision", "roc_auc", "sensitivity", "specificity",
           "surface_distance_metrics"]
