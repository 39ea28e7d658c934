"""`recserve eval`: recommendation quality through the server's own retrieval and ranking."""
