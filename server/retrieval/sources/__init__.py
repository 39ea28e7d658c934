"""Candidate sources: each turns a request context into item labels with a source score."""
