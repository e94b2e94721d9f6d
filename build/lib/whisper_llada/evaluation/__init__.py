"""Evaluation: decoding a test set into crash-safe result records, cascades, scoring, WER metrics and result files, mode comparisons."""
