"""Candidate retrieval: HNSW k-NN under a reader/writer lock, filters, multi-interest merging."""
