"""mist.worker: runs function invocations in isolated sandboxes (zygote, pool, Lambda runtime)."""

from mist.worker.config import WorkerConfig
from mist.worker.types import InvokeResult, LogLine, SandboxSpec
from mist.worker.worker import FunctionStatistics, Worker, WorkerStatistics

__all__ = [
    "FunctionStatistics",
    "InvokeResult",
    "LogLine",
    "SandboxSpec",
    "Worker",
    "WorkerConfig",
    "WorkerStatistics",
]
