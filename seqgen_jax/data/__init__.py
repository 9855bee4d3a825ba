"""Datasets, tokenizers, synthetic tasks and the step-indexed batch iterators."""
