"""Recorded market data in: the LOBSTER reader, users' own trades and L2 files, the event store."""
