"""Reranking candidates with interaction features: linear scorer, MMR diversity, explanations."""
