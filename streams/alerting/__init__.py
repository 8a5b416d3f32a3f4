"""Alerting: turn detector findings into edge-triggered alerts and deliver them to Slack, PagerDuty and webhooks.

* :mod:`.model` — :class:`AlertEvent`, the record on the alerts topic (``schemas/alert.avsc``).
* :mod:`.lifecycle` — :class:`AlertLifecycle`, pure: findings in, trigger/resolve events out, injected clock.
* :mod:`.codec` — Avro bytes for the alerts topic.
* :mod:`.slack`, :mod:`.pagerduty`, :mod:`.webhook` — payload builders (pure).
* :mod:`.delivery` — HTTP delivery with retries, backoff, Retry-After and dead letters, off the worker's path.
"""
