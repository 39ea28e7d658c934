"""`recserve train-ranker`: learn the reranker's feature weights from logged interactions."""
