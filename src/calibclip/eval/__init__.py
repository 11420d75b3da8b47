"""Evaluation: official retrieval metrics (``metrics``), the benchmark runner (``runner``) and reports."""
