"""Code written for Lambda's S3 and schedule triggers reads mist's events unchanged:
aws-lambda-powertools' event classes parse them (issue 4)."""

from __future__ import annotations

import json

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, S3Event

from mist.s3.events import event_record
from mist.triggers.events import scheduled_event


def test_powertools_s3_event_reads_a_mist_notification():
    record = event_record(event_name="ObjectCreated:Put", bucket="photos", key="cats/tom cat.jpg", size=48213,
                          etag="2b1f0c", sequencer="00000000000000A3", event_time=1_795_675_175.5,
                          principal="MISTKEY", source_ip="127.0.0.1", request_id="4F1A")
    event = S3Event(json.loads(json.dumps({"Records": [record]})))  # as the function receives it
    assert event.bucket_name == "photos"
    assert event.object_key == "cats/tom cat.jpg"  # powertools unquotes S3's URL-encoded key
    r = event.record
    assert (r.event_name, r.event_source, r.s3.bucket.arn) == ("ObjectCreated:Put", "aws:s3", "arn:aws:s3:::photos")
    assert (r.s3.get_object.size, r.s3.get_object.etag, r.s3.get_object.sequencer) == (48213, "2b1f0c", "00000000000000A3")
    assert r.event_time.startswith("20")


def test_powertools_eventbridge_event_reads_a_mist_schedule_fire():
    from datetime import datetime, timezone

    fire = datetime(2026, 1, 1, 12, 5, tzinfo=timezone.utc)
    event = EventBridgeEvent(scheduled_event("trg-0123456789abcdef", fire))
    assert event.detail_type == "Scheduled Event" and event.source == "aws.events"
    assert event.time == "2026-01-01T12:05:00Z" and event.resources[0].endswith("rule/trg-0123456789abcdef")
