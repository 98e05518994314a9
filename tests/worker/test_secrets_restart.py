"""Worker.restart: a function's secrets changed, so its instances are replaced; and the worker
masks an instance's secret values in what it printed."""

import asyncio
from dataclasses import replace

import pytest

from mist.secrets.redact import Redactor
from tests.worker.conftest import call, value

pytestmark = pytest.mark.sandbox

SOURCE = """\
import os, time
def handler(event, context):
    if event == "slow":
        time.sleep(0.4)
    if event == "fail":
        print("logging in with", os.environ["TOKEN"])
        raise RuntimeError("login refused for " + os.environ["TOKEN"])
    return os.environ["TOKEN"]
"""


def with_token(spec, token, revision):
    return replace(spec, env=(("TOKEN", token),), revision=revision, redactor=Redactor([token]))


async def test_after_a_restart_the_next_call_gets_a_new_instance_with_the_new_value(worker, function):
    old = with_token(function(SOURCE), "token-old-1111", 0)
    assert value(await call(worker, old)) == "token-old-1111"
    assert not (await call(worker, old)).cold_start
    await worker.restart("fn", 1)
    new = with_token(old, "token-new-2222", 1)
    result = await call(worker, new)
    assert (value(result), result.cold_start) == ("token-new-2222", True)
    assert [(f.instances, f.version) for f in worker.statistics().functions] == [(1, old.version)]


async def test_a_call_running_during_the_restart_finishes_with_the_old_value(worker, function):
    old = with_token(function(SOURCE), "token-old-1111", 0)
    await call(worker, old)
    running = asyncio.ensure_future(call(worker, old, "slow"))
    await asyncio.sleep(0.15)
    await worker.restart("fn", 1)
    new = with_token(old, "token-new-2222", 1)
    assert value(await call(worker, new)) == "token-new-2222"
    assert value(await running) == "token-old-1111"
    await asyncio.sleep(0.05)
    assert worker.statistics().instances == 1  # the old instance went when its call ended


async def test_a_call_made_before_the_restart_but_started_after_it_does_not_leave_an_old_instance(worker, function):
    old = with_token(function(SOURCE), "token-old-1111", 0)
    await worker.restart("fn", 1)  # the old spec was built before this, its call arrives after
    assert value(await call(worker, old)) == "token-old-1111"
    new = with_token(old, "token-new-2222", 1)
    result = await call(worker, new)
    assert (value(result), result.cold_start) == ("token-new-2222", True)  # not the old instance


async def test_an_instance_s_secret_values_are_masked_in_its_logs_and_error(worker, function):
    spec = with_token(function(SOURCE), "token-old-1111", 0)
    result = await call(worker, spec, "fail")
    assert not result.ok and result.error["errorMessage"] == "login refused for ***"
    assert "token-old-1111" not in repr(result.error) and "token-old-1111" not in repr(result.logs)
    assert any(line.text == "logging in with ***" for line in result.logs)
