"""The poller thread: inspect broadcasts and broker queue reads, published as an immutable
snapshot.
"""
