"""Evaluation metrics that need more than a loss: FID with the project's own feature network."""
