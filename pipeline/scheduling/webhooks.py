"""Webhook events: written to the outbox in the same transaction as the state change they report,
then delivered in the background with timeouts and exponential backoff.

Headers on every POST (HMAC-SHA256 over "<timestamp>.<body>" with the shared secret):
    X-Mlops-Event: fire.started | fire.succeeded | fire.failed | fire.skipped | fire.interrupted | schedule.failed
    X-Mlops-Delivery: <uuid>          the same on every retry of one event: de-duplicate on it
    X-Mlops-Timestamp: <unix seconds> when this attempt was signed: reject old ones to stop replays
    X-Mlops-Signature: sha256=<hex>   only when a secret is configured

A receiver that is down, slow or failing never blocks scheduling (delivery runs in its own task and
thread); undelivered events stay in the sqlite outbox and are retried after a restart.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from pipeline.config.errors import ConfigError
from pipeline.redaction import is_credential_name, redact_uri
from pipeline.scheduling.claims import ClaimStore

EVENTS = ("fire.started", "fire.succeeded", "fire.failed", "fire.skipped", "fire.interrupted",
          "schedule.failed")  # payloads: events.py, the one place they are built
SIGNATURE_HEADER = "X-Mlops-Signature"
TIMESTAMP_HEADER = "X-Mlops-Timestamp"
DELIVERY_HEADER = "X-Mlops-Delivery"
EVENT_HEADER = "X-Mlops-Event"


def check_url(url: str) -> None:
    """Refuse a webhook URL that could never work, or that would put a credential into logs.

    Error messages quote the URL with any password replaced by *** (they are printed and logged)."""
    from urllib.parse import parse_qsl, urlsplit

    shown = redact_uri(url) if isinstance(url, str) else url
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        raise ConfigError(f"webhook_url {shown!r} must be an http(s) URL without spaces, "
                          "e.g. https://hooks.example.com/training")
    parts = urlsplit(url)
    if parts.username or parts.password or "@" in parts.netloc:
        raise ConfigError("webhook_url must not carry a user or password (it would appear in logs); "
                          "authenticate with the signing secret (MLOPS_WEBHOOK_SECRET) instead")
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"webhook_url {shown!r}: scheme {parts.scheme or '(none)'!r} is not http or https")
    if not parts.hostname:
        raise ConfigError(f"webhook_url {shown!r} has no host")
    query = parse_qsl(parts.query, keep_blank_values=True)
    secret_params = sorted({k for k, _ in query if is_credential_name(k)})
    if secret_params:
        raise ConfigError(f"webhook_url must not carry a credential in its query ({', '.join(secret_params)}; it "
                          "would appear in logs); authenticate with the signing secret (MLOPS_WEBHOOK_SECRET) instead")
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"webhook_url {shown!r} has an invalid port") from None


def shown(url: str) -> str:
    """A webhook URL as printed: scheme, host and port only. Some receivers (Slack, Teams) put their secret
    in the path, and the runner's banner goes to the journal."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.path not in ("", "/") or parts.query else url


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: Optional[float] = None,
           tolerance: float = 300.0) -> bool:
    """What a receiver should check: the signature matches and the timestamp is recent."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    try:
        age = abs((time.time() if now is None else now) - float(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(given, sign(secret, timestamp, body))


def enqueue(store: ClaimStore, event: str, payload: dict[str, Any], now: float) -> str:
    """Add an event to the outbox; call inside the transaction that makes it true."""
    assert event in EVENTS, event
    delivery_id = str(uuid.uuid4())
    # Redacted: an error quoted in a payload (a job's last stderr line, an MLflow error) can carry a
    # tracking URI's password; the body is stored in the outbox and sent to a third party.
    body = redact_uri(json.dumps({"event": event, "delivery_id": delivery_id, "created_at": now, **payload},
                                 sort_keys=True, default=str)).encode()
    store.add_event(delivery_id, event, body, now)
    return delivery_id


@dataclass
class Delivery:
    delivery_id: str
    event: str
    body: bytes
    attempts: int


class WebhookError(Exception):
    pass


def post(url: str, delivery: Delivery, secret: Optional[str], timeout: float, now: Optional[float] = None) -> int:
    """One attempt. Returns the HTTP status; raises WebhookError on anything but 2xx."""
    timestamp = str(int(time.time() if now is None else now))
    headers = {"Content-Type": "application/json", "User-Agent": "mlops-unity-scheduler/1",
               EVENT_HEADER: delivery.event, DELIVERY_HEADER: delivery.delivery_id, TIMESTAMP_HEADER: timestamp}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, delivery.body)
    req = urllib.request.Request(url, data=delivery.body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WebhookError(f"{type(exc).__name__}: {reason}") from None


class WebhookDelivery:
    """Drains the outbox: oldest due event first, one at a time, retried with backoff."""

    def __init__(self, store: ClaimStore, url: Optional[str], secret: Optional[str] = None, timeout: float = 10.0,
                 max_attempts: int = 12, backoff_base: float = 5.0, backoff_max: float = 3600.0,
                 clock: Callable[[], float] = time.time, log: Callable[[str], None] = print):
        self.store, self.url, self.secret, self.timeout = store, url, secret, timeout
        self.max_attempts, self.backoff_base, self.backoff_max = max_attempts, backoff_base, backoff_max
        self.clock, self.log = clock, log
        self.wake = asyncio.Event()

    def backoff(self, attempts: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2 ** (attempts - 1))
        return delay * (1 + random.random() / 4)  # jitter: many runners' retries do not align

    def _take(self, now: float) -> Optional[Delivery]:
        row = self.store.take_event(now, lease_seconds=self.timeout + 30)
        return None if row is None else Delivery(*row)

    def _record(self, d: Delivery, error: Optional[str], now: float) -> None:
        attempts = d.attempts + 1
        if error is None:
            self.store.event_delivered(d.delivery_id, attempts, now)
        elif attempts >= self.max_attempts:
            self.store.event_failed(d.delivery_id, attempts, error, None, now)
            self.log(f"webhook: gave up on {d.event} {d.delivery_id} after {attempts} attempts: {error}")
        else:
            retry = now + self.backoff(attempts)
            self.store.event_failed(d.delivery_id, attempts, error, retry, now)
            self.log(f"webhook: {d.event} {d.delivery_id} failed ({error}); retry {attempts} in {retry - now:.0f}s")

    async def deliver_due(self) -> int:
        """Send every event that is due now; returns how many were delivered."""
        if not self.url:
            return 0
        sent = 0
        while True:
            delivery = self._take(self.clock())
            if delivery is None:
                return sent
            try:
                await asyncio.to_thread(post, self.url, delivery, self.secret, self.timeout)
                error = None
            except WebhookError as exc:
                error = str(exc)
            self._record(delivery, error, self.clock())
            if error is None:
                sent += 1
            else:
                return sent  # the receiver is struggling: back off instead of hammering it

    def next_due_in(self) -> Optional[float]:
        at = self.store.next_event_at()
        return None if at is None else max(0.5, at - self.clock())

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.deliver_due()
            except Exception as exc:  # never let delivery problems take the scheduler down
                print(f"webhook: delivery loop error: {type(exc).__name__}: {exc}", file=sys.stderr)
            wait = self.next_due_in()
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=min(wait if wait is not None else 60.0, 60.0))
            except asyncio.TimeoutError:
                pass

    def pending(self) -> int:
        return self.store.undelivered_events()
