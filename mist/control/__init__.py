"""The control plane: function registry, deploys, dependency layers, invocation records, logs."""
