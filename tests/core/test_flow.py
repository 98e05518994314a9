"""Concurrency limits and CPU shares across tenants (pure)."""

import pytest

from mist.core.flow import Ask, Counts, TenantState, blocking, cpu_shares, queue_blocking


def block(ask, *, node=0, function=0, running=0, unreserved=0, tenant_max=None, reserved_total=0, node_limit=None):
    return blocking(ask, Counts(node, function), TenantState(running, unreserved), tenant_max=tenant_max,
                    reserved_total=reserved_total, node_limit=node_limit)


A = Ask("acme", "acme/a", None)
R = Ask("acme", "acme/r", 3)


@pytest.mark.parametrize(
    ("ask", "state", "held_by"),
    [
        (A, {}, None),  # no limits at all
        (A, {"running": 9, "unreserved": 9, "tenant_max": 10}, None),
        (A, {"running": 10, "unreserved": 10, "tenant_max": 10}, "tenant acme: 10 concurrent executions"),
        # 4 of the tenant's 10 are reserved: unreserved functions share 6
        (A, {"running": 6, "unreserved": 6, "tenant_max": 10, "reserved_total": 4}, "(4 reserved"),
        (A, {"running": 7, "unreserved": 5, "tenant_max": 10, "reserved_total": 4}, None),
        # a reserved function runs up to its reservation even when the unreserved pool is full
        (R, {"function": 2, "running": 8, "unreserved": 6, "tenant_max": 10, "reserved_total": 4}, None),
        (R, {"function": 3, "running": 3, "tenant_max": 10, "reserved_total": 4},
         "function acme/r: reserved concurrency 3"),
        (R, {"function": 3}, "reserved concurrency 3"),  # a cap even without a tenant limit
        (A, {"node": 8, "node_limit": 8}, "this machine: 8 concurrent executions"),
        (R, {"node": 8, "node_limit": 8}, "this machine"),  # a reservation does not beat the machine
    ],
)
def test_an_invocation_runs_unless_a_limit_holds_it_and_the_refusal_names_the_limit(ask, state, held_by):
    got = block(ask, **state)
    if held_by is None:
        assert got is None
    else:
        assert got is not None and held_by in got


@pytest.mark.parametrize(
    ("waiting", "function_max", "tenant_max", "refused"),
    [
        ((0, 0), None, None, None),
        ((5, 5), 6, 6, None),
        ((5, 6), 6, 100, "function f: 6 queued requests"),
        ((100, 1), None, 100, "tenant t: 100 queued requests"),
        ((0, 0), 0, None, "function f: 0 queued requests"),  # max_queued 0: never wait
    ],
)
def test_queue_limits(waiting, function_max, tenant_max, refused):
    assert queue_blocking("t", "f", tenant_waiting=waiting[0], function_waiting=waiting[1],
                          tenant_max_queued=tenant_max, function_max_queued=function_max) == refused


def test_tenants_share_cpu_by_weight_whatever_their_number_of_sandboxes():
    flood = [(f"a{i}", "a", 128) for i in range(50)]
    shares = cpu_shares([*flood, ("b1", "b", 128)], {"a": 1, "b": 1}, per_weight=10_240)
    assert sum(v for k, v in shares.items() if k.startswith("a")) == pytest.approx(10_240, abs=50)
    assert shares["b1"] == 10_240
    weighted = cpu_shares([("a1", "a", 128), ("b1", "b", 128)], {"a": 1, "b": 3}, per_weight=1024)
    assert weighted == {"a1": 1024, "b1": 3072}


def test_cpu_shares_stay_within_the_kernels_bounds():
    many = [(f"s{i}", "t", 128) for i in range(10_000)]
    assert min(cpu_shares(many, {}).values()) == 2
    assert cpu_shares([("big", "t", 1024)], {"t": 1000})["big"] == 262_144
