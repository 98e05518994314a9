"""The `mist` command: a thin client of the HTTP API (docs/api.md), plus `mist up`."""
