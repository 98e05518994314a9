"""The HTTP edge: the ASGI app, its request path, and the mapping of errors to status codes."""
