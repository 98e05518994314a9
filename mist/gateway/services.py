"""The services the routes use, held on `app.state.services`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mist.control.admission import Admission
from mist.control.events import EventService
from mist.control.functions import FunctionService
from mist.control.invocations import InvocationService
from mist.control.queues import QueueService
from mist.control.records import InvocationLog
from mist.tenancy.audit import AuditLog
from mist.tenancy.service import Tenancy


@dataclass
class Services:
    functions: FunctionService
    invocations: InvocationService
    records: InvocationLog
    uploads_dir: Path
    tenancy: Tenancy  # API keys and tenants: every route but /healthz and public HTTP triggers needs a key
    statistics: object = None  # a callable returning a dict of component statistics, for /v1/statistics
    events: EventService | None = None  # asynchronous invocations (None: not served)
    queues: QueueService | None = None  # mist queues and dead-letter queues
    objects: object = None  # the S3 endpoint's mist.s3.ObjectStore, for its access keys (None: not served)
    triggers: object = None  # mist.control.triggers.TriggerManager (None: not served)
    audit: AuditLog | None = None  # the audit log (None: requests are not audited)
    admission: Admission | None = None  # rate and concurrency limits (None: no limits)
    billing: object = None  # mist.metering.service.BillingService (None: no metering)
