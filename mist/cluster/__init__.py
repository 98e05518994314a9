"""Cluster coordination in PostgreSQL: fenced leases, worker membership, the shard map.

Design and failure modes: docs/cluster.md. In-memory fakes: mist/testing/cluster.py.
"""
