"""Fakes and fixtures for code that builds on mist (and for mist's own tests)."""
