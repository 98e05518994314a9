"""Concurrency limits: may an invocation run now, and if not, which limit holds it (pure).

Three levels, checked together when an invocation asks to run:

- **the node**: at most `node_limit` invocations run at once on this machine (None: no cap).
  Past it the machine is saturated and waiting invocations are served across tenants by weight
  (fair queuing, `mist.core.ratelimit.FairQueue`);
- **the tenant**: at most `tenant_max` at once over all its functions;
- **the function**: Lambda's *reserved concurrency*. A function with `reserved = r` runs at most
  r at once, and those r are set aside for it: the tenant's other functions share only
  `tenant_max - sum(reserved)`. `reserved = 0` stops a function (every invocation refused).

    >>> tenant = TenantState(running=3, unreserved_running=1)
    >>> blocking(Ask("acme", "acme/a", reserved=2), Counts(node=3, function=2), tenant,
    ...          tenant_max=10, reserved_total=4, node_limit=None)
    'function acme/a: reserved concurrency 2'
    >>> blocking(Ask("acme", "acme/b", reserved=None), Counts(node=3, function=0), tenant,
    ...          tenant_max=10, reserved_total=4, node_limit=None) is None
    True

A refusal names the limit, so the 429 the caller gets says which one to raise.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ask:
    """An invocation that wants to run: its tenant, its function id and the function's
    reserved concurrency (None: it shares the tenant's unreserved pool)."""

    tenant: str
    function: str
    reserved: int | None


@dataclass(frozen=True, slots=True)
class Counts:
    node: int  # running on this machine
    function: int  # running of this function


@dataclass(frozen=True, slots=True)
class TenantState:
    running: int = 0  # of every function of the tenant
    unreserved_running: int = 0  # of its functions without reserved concurrency


def blocking(ask: Ask, counts: Counts, tenant: TenantState, *, tenant_max: int | None, reserved_total: int,
             node_limit: int | None) -> str | None:
    """None if `ask` may run now, else the limit that holds it (a phrase for the error message)."""
    if ask.reserved is not None:
        if counts.function >= ask.reserved:
            return f"function {ask.function}: reserved concurrency {ask.reserved}"
    elif tenant_max is not None and tenant.unreserved_running >= tenant_max - reserved_total:
        return (f"tenant {ask.tenant}: {tenant_max} concurrent executions"
                + (f" ({reserved_total} reserved for functions with reserved concurrency)" if reserved_total else ""))
    if tenant_max is not None and tenant.running >= tenant_max:
        return f"tenant {ask.tenant}: {tenant_max} concurrent executions"
    if node_limit is not None and counts.node >= node_limit:
        return f"this machine: {node_limit} concurrent executions"
    return None


def queue_blocking(tenant: str, function: str, *, tenant_waiting: int, function_waiting: int,
                   tenant_max_queued: int | None, function_max_queued: int | None) -> str | None:
    """None if one more invocation may wait, else the queue limit that refuses it."""
    if function_max_queued is not None and function_waiting >= function_max_queued:
        return f"function {function}: {function_max_queued} queued requests"
    if tenant_max_queued is not None and tenant_waiting >= tenant_max_queued:
        return f"tenant {tenant}: {tenant_max_queued} queued requests"
    return None


def cpu_shares(sandboxes: list[tuple[str, str, int]], weights: dict[str, int], *,
               per_weight: int = 10_240, floor: int = 2, ceiling: int = 262_144) -> dict[str, int]:
    """cgroup v1 `cpu.shares` for each sandbox (id, tenant, memory MB) so that, under contention,
    tenants share the CPU by weight (each tenant's sandboxes together hold `weight x per_weight`
    shares) and a tenant's sandboxes share its part in proportion to their memory, as Lambda
    gives CPU in proportion to memory. The kernel's bounds [2, 262144] are kept.

        >>> cpu_shares([("a1", "a", 128), ("a2", "a", 128), ("a3", "a", 256), ("b1", "b", 128)], {"a": 1, "b": 1},
        ...            per_weight=1024)
        {'a1': 256, 'a2': 256, 'a3': 512, 'b1': 1024}
    """
    memory: dict[str, int] = {}
    for _, tenant, mb in sandboxes:
        memory[tenant] = memory.get(tenant, 0) + max(1, mb)
    out: dict[str, int] = {}
    for sid, tenant, mb in sandboxes:
        budget = per_weight * max(1, weights.get(tenant, 1))
        out[sid] = min(ceiling, max(floor, round(budget * max(1, mb) / memory[tenant])))
    return out
