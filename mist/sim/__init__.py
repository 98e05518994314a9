"""Trace-driven keep-alive simulator: replay invocation traces through a KeepAlivePolicy on a simulated clock.

`trace` loads Azure Functions 2019 traces (csv, I/O); `engine` replays them (pure logic);
`policies` resolves policy names, the clairvoyant `oracle` included; `synthetic` draws seeded
Azure-like traces to judge policies off the sample. docs/keepalive.md has the model.
"""

from mist.sim.engine import FunctionResult, SimulationResult, replay_function, simulate
from mist.sim.policies import Oracle, resolve
from mist.sim.trace import Trace, TraceFunction, load_azure2019

__all__ = [
    "FunctionResult", "Oracle", "SimulationResult", "Trace", "TraceFunction", "load_azure2019",
    "replay_function", "resolve", "simulate",
]
