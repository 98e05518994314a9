"""Metering: a usage record per invocation attempt and per span of provisioned instances, the
crash-safe ledger they go to, price plans, usage reports, invoices and spend caps.

    usage.py     UsageRecord and the pure rules that make one (billed time, GB-s, hours, months)
    plans.py     price plans from config (typed defaults, one validate()), tenants' plans and caps
    caps.py      the spend cap as a pure function over a running month-to-date total
    journal.py   the append-only journal: a record is on disk before the answer (group commit)
    ledger.py    journal -> the usage table (idempotent by attempt id), replayed at start
    meter.py     the hot path: the cap check, records in, running totals per tenant
    service.py   usage reports and invoices, tenants' plans and caps (what the API asks)
    reports.py   reports and invoices as JSON and CSV
    store.py     what metering needs from the database (sqlusage.py: over SQLAlchemy)

Design and guarantees: docs/billing.md.
"""
