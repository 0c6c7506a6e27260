"""Evaluation of tuned models against baselines on held-out data, its statistics, and the HTML run report."""
