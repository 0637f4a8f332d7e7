"""How a webhook is signed (Stripe's and Standard Webhooks' scheme): an HMAC-SHA256, keyed with
the team's secret, over ``"<unix timestamp>.<body>"``, sent as
``Distillery-Signature: t=<timestamp>,v1=<hex digest>``. docs/operations.md gives a receiver the
code that checks it."""

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "Distillery-Signature"
DELIVERY_HEADER = "Distillery-Delivery"
EVENT_HEADER = "Distillery-Event"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The header's value for ``body`` sent at ``timestamp``."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
