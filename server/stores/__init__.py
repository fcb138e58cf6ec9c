"""Persistence: the store contract, its SQLite and Redis backends, the write-behind
layer, and the records they keep. Imports only the core."""
