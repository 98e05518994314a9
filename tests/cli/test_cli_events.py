"""`mist invoke --async`, `mist invocation show`, `mist dlq ...`, `mist queue ...` and the deploy
options of asynchronous invocations, against the fake API."""

import json

import pytest


@pytest.fixture
def deployed(cli, fake, hello):
    assert cli("deploy", "hello", str(hello)).exit_code == 0
    return fake


def record(inv_id="event-1", condition="RetriesExhausted", attempts=3, error=None):
    return {
        "version": "1.0", "timestamp": "2026-11-26T05:00:03.000Z",
        "requestContext": {"requestId": inv_id, "functionArn": "arn:mist:lambda:local:default:function:hello:$LATEST",
                           "condition": condition, "approximateInvokeCount": attempts},
        "requestPayload": {"order": 7},
        "responseContext": {"statusCode": 200, "executedVersion": "1", "functionError": "Unhandled"},
        "responsePayload": error or {"errorType": "ValueError", "errorMessage": "bad order", "stackTrace": []},
    }  # fmt: skip


def test_invoke_async_prints_only_the_invocation_id(cli, deployed):
    result = cli("invoke", "hello", "--async", "--data", '{"name": "Ada"}')

    assert result.exit_code == 0, result.output
    assert result.stdout == "event-1\n"
    sent = deployed.requests[-1]
    assert sent.headers["x-mist-invocation-type"] == "Event" and json.loads(sent.content) == {"name": "Ada"}
    assert "x-mist-idempotency-key" not in sent.headers


def test_invoke_async_with_a_key_tells_a_replay_apart(cli, deployed):
    first = cli("invoke", "hello", "--async", "--idempotency-key", "order-7", "--json")
    again = cli("invoke", "hello", "--async", "--idempotency-key", "order-7", "--json")

    assert json.loads(first.stdout) == {"invocation_id": "event-1", "status_code": 202, "replayed": False}
    assert json.loads(again.stdout) == {"invocation_id": "event-1", "status_code": 202, "replayed": True}
    assert deployed.requests[-1].headers["x-mist-idempotency-key"] == "order-7"


def test_an_idempotency_key_without_async_is_refused_before_sending(cli, deployed):
    sent = len(deployed.requests)

    result = cli("invoke", "hello", "--idempotency-key", "k")

    assert result.exit_code == 2
    assert "error: --idempotency-key applies to asynchronous invocations: add --async" in result.stderr
    assert len(deployed.requests) == sent


def test_invoke_async_of_an_unknown_function_exits_2(cli, fake):
    result = cli("invoke", "nope", "--async")

    assert result.exit_code == 2 and "function 'nope' does not exist" in result.stderr


def test_invocation_show_prints_status_and_each_attempts_error(cli, deployed):
    cli("invoke", "hello", "--async")
    deployed.events["event-1"].update(
        status="dead-lettered", condition="RetriesExhausted", destination="dlq",
        attempts=[{"attempt": n, "started_at": f"2026-11-26T05:00:0{n}+00:00", "ended_at": None, "outcome": "failed",
                   "error_type": "ValueError", "error_message": "bad order", "version": 1, "record_id": f"event-1-{n}"}
                  for n in (1, 2)],
    )  # fmt: skip

    result = cli("invocation", "show", "event-1")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "event-1  hello  dead-lettered (RetriesExhausted)"
    assert "  record sent to   the dead-letter queue (mist dlq ls hello)" in lines
    assert any(line.split()[:4] == ["2", "failed", "2026-11-26T05:00:02Z", "1"] and "ValueError: bad order" in line
               for line in lines)  # fmt: skip
    shown = json.loads(cli("invocation", "show", "event-1", "--json").stdout)
    assert shown["status"] == "dead-lettered" and len(shown["attempts"]) == 2


def test_invocation_show_of_a_sync_invocation_prints_its_record(cli, deployed):
    cli("invoke", "hello")

    result = cli("invocation", "show", "inv-1")

    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "inv-1  hello  succeeded"
    assert "  trigger     api" in result.stdout.splitlines()


def test_invocation_show_of_an_unknown_id_exits_2(cli, fake):
    result = cli("invocation", "show", "nope")

    assert result.exit_code == 2 and "no invocation 'nope'" in result.stderr


def test_dlq_ls_show_and_redrive(cli, deployed):
    deployed.dead_letters["hello"] = [
        {"id": "m1", "sent_at": "2026-11-26T05:00:03+00:00", "record": record("event-1")},
        {"id": "m2", "sent_at": "2026-11-26T05:00:04+00:00", "record": record("event-2", "EventAgeExceeded", 1)},
    ]

    listed = cli("dlq", "ls", "hello")
    shown = cli("dlq", "show", "hello", "m2")
    redriven = cli("dlq", "redrive", "hello", "--id", "m2")

    assert listed.exit_code == 0
    header, first, second = listed.stdout.splitlines()
    assert header.split() == ["ID", "SENT", "INVOCATION", "ATTEMPTS", "CONDITION", "LAST", "ERROR"]
    assert first.split() == ["m1", "2026-11-26T05:00:03Z", "event-1", "3", "RetriesExhausted", "ValueError:", "bad",
                             "order"]  # fmt: skip
    assert second.split()[3:5] == ["1", "EventAgeExceeded"]
    assert json.loads(shown.stdout) == record("event-2", "EventAgeExceeded", 1)
    assert redriven.stdout == "m2 -> invocation redriven-m2\n"
    assert json.loads(deployed.requests[-1].content) == {"ids": ["m2"]}
    assert [m["id"] for m in deployed.dead_letters["hello"]] == ["m1"]


def test_dlq_redrive_without_ids_redrives_all(cli, deployed):
    deployed.dead_letters["hello"] = [{"id": "m1", "sent_at": "2026-11-26T05:00:03+00:00", "record": record()}]

    result = cli("dlq", "redrive", "hello", "--json")

    assert json.loads(result.stdout) == {"redriven": [{"message_id": "m1", "invocation_id": "redriven-m1"}]}
    assert json.loads(deployed.requests[-1].content) == {}


def test_an_empty_dlq_says_so(cli, deployed):
    assert cli("dlq", "ls", "hello").stdout == "The dead-letter queue of hello is empty.\n"


def test_dlq_show_of_an_unknown_entry_says_how_to_list_them(cli, deployed):
    result = cli("dlq", "show", "hello", "nope")

    assert result.exit_code == 2 and "`mist dlq ls hello` lists them" in result.stderr


def test_queue_ls_receive_and_delete(cli, fake):
    fake.queues["done"] = [{"id": "q1", "sent_at": "2026-11-26T05:00:03+00:00", "receive_count": 0,
                            "body": record(condition="Success")}]  # fmt: skip

    listed = cli("queue", "ls")
    received = cli("queue", "receive", "done", "--max", "5", "--visibility-timeout", "60")
    deleted = cli("queue", "delete", "done", "q1")

    assert listed.stdout.splitlines()[1].split() == ["done", "1", "1"]
    assert received.stdout.startswith("q1  sent 2026-11-26T05:00:03Z  received 1 time\n{\n")
    assert json.loads(received.stdout.split("\n", 1)[1])["requestContext"]["condition"] == "Success"
    assert fake.requests[-2].url.params["visibility_timeout"] == "60.0"
    assert deleted.stdout == "Deleted 1 message from done\n" and fake.queues["done"] == []
    assert cli("queue", "delete", "done", "q1").exit_code == 2
    assert cli("queue", "receive", "done", "--json").stdout == '{\n  "messages": []\n}\n'


def test_deploy_sends_the_async_invocation_options(cli, fake, hello):
    result = cli("deploy", "hello", str(hello), "--retries", "0", "--max-event-age", "600",
                 "--on-success", "queue:done", "--on-failure", "function:alert")  # fmt: skip

    assert result.exit_code == 0, result.output
    assert fake.configs[-1] == {"retries": 0, "max_event_age_s": 600, "on_success": "queue:done",
                                "on_failure": "function:alert"}  # fmt: skip


def test_deploy_refuses_a_bad_destination_before_uploading(cli, fake, hello):
    result = cli("deploy", "hello", str(hello), "--on-failure", "sqs:x")

    assert result.exit_code == 2
    assert "--on-failure must be function:NAME or queue:NAME" in result.stderr
    assert fake.requests == []
