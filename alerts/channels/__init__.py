"""Channel adapters: one per channel kind (CAP feed, webhook, e-mail, SMS, MQTT), one registry.

These are adapters (they do I/O); the rest of :mod:`alerts` stays pure. See
:mod:`alerts.channels.base` for the protocol every adapter follows.
"""
