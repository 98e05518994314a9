"""Event sources for functions: message-queue connectors and cron/rate schedules (docs/triggers.md).

The trigger manager (store, CLI, running connectors in `mist up`) builds on these pieces:
connectors (`mist.triggers.connectors`), the event shapes (`events`), the pure policy (`policy`),
schedules (`schedule`) and the per-batch Deliver callback (`deliver`).
"""
