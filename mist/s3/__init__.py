"""S3-compatible object storage: an S3 endpoint (SigV4) over local disk + SQL metadata, with an event outbox.

    store = ObjectStore(data_dir, "sqlite:///DATA/s3.db")   # disk + database; recovers on open
    key = store.keys.create()                                # an access key (secret shown once)
    app = build_s3_app(store)                                # the ASGI app boto3 talks to
    server = S3Server(store, sock); await server.start()     # sock: a bound, listening socket
    events = await store.outbox.pending_events(100)          # bucket notifications, at least once
"""

from mist.s3.app import build_s3_app
from mist.s3.events import event_record
from mist.s3.keys import AccessKey, AccessKeys
from mist.s3.model import Bucket, Caller, ObjectInfo, ObjectMeta
from mist.s3.outbox import MemoryOutbox, Outbox, OutboxEvent, SqlOutbox
from mist.s3.serve import S3Server, serve_s3
from mist.s3.store import ObjectStore

__all__ = [
    "AccessKey",
    "AccessKeys",
    "Bucket",
    "Caller",
    "MemoryOutbox",
    "ObjectInfo",
    "ObjectMeta",
    "ObjectStore",
    "Outbox",
    "OutboxEvent",
    "S3Server",
    "SqlOutbox",
    "build_s3_app",
    "event_record",
    "serve_s3",
]
