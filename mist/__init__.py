"""mist: a self-hosted serverless platform. Deploy Python functions, run them in isolated sandboxes."""

__version__ = "0.1.0"
