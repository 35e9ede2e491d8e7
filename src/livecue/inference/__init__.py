"""Streaming inference: the StreamEngine, its events, decision rule, sources and real-time pipeline."""
