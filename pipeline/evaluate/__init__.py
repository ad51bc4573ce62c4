"""Evaluation stage: metrics on arrays, rows per case and class with their summary, batch
evaluation of prediction folders, reports (CSV, JSON, Markdown) and figures."""

from .folder import evaluate_folder, pair_files
from .report import write_reports
from .rows import evaluate_case, summarize

__all__ = ["evaluate_case", "evaluate_folder", "pair_files", "summarize", "write_reports"]
