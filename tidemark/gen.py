"""A deterministic, realistic synthetic stream of raw events, and the `tidemark gen` command.

Why it exists: every stage of tidemark (validation, dedup, identity, cost allocation) is tested
against this stream, so it must be reproducible byte for byte from a seed and must carry its
own answer key. Each record comes with a `Truth` written by the generator from what it *did*
(which field it broke, which record it re-sent), never by asking the validator, so a test that
compares the two catches bugs on either side.

What the stream looks like (rates are exact per block of 200 records, positions are random):
  * 8 tenants with Zipf-like sizes; web / iOS / Android visitors browsing in sessions (page
    views, product views, add-to-cart, orders with revenue), ESP webhooks for email opens and
    clicks with campaign ids; anonymous visitors who later identify (email, phone) and
    sometimes alias; people on several devices; shared family devices.
  * 5% cost records: hourly AWS line items (EC2, S3, RDS, Lambda, CloudFront) per resource,
    account and region, tagged team/env/feature/customer or untagged, plus taxes and credits.
  * 1% exact duplicates (the same key and bytes re-sent up to ~1500 records later).
  * 5% late customer events (event time 1 s to 10 min behind the stream clock).
  * 0.5% malformed records cycling through every dead-letter reason code.
Event times follow a simulated clock: record i is emitted at start_ms + i * 1000 / rate.

Truth assumes the default validation limits (32 KiB payloads, 1 h of allowed clock skew) and a
validator clock at or after the record's emission time (`Truth.emit_ms`).

File format of `tidemark gen --out`: newline-delimited *bytes*, one raw Kafka value per line.
Lines are JSON except the malformed ones, which may hold anything but a newline (including
invalid UTF-8), so read the file in binary mode and split on b"\\n". Keys are in the truth file.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from random import Random
from typing import Any, NamedTuple

import orjson

from udfs.contract import (
    BAD_ENCODING,
    BAD_TIMESTAMP,
    COST_TABLE,
    EVENTS_TABLE,
    FUTURE_TIME,
    INVALID_VALUE,
    MALFORMED_JSON,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    OVERSIZED,
    UNKNOWN_TYPE,
    WRONG_TYPE,
)

DEFAULT_START_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z
DEFAULT_EVENTS_PER_SECOND = 1000.0

# One block of record slots: M malformed, D duplicate, L late event, C cost record, N event.
_BLOCK = "M" + "D" * 2 + "L" * 10 + "C" * 10 + "N" * 177
_DUPLICATE_WINDOW = 1500  # a re-send repeats one of this many most recent valid records
_HOUR_MS = 3_600_000
_YEAR_MS = 365 * 86_400_000
_LATEST_MS = 10_413_791_999_999 - _HOUR_MS  # keep "future" records inside DateTime64's range
_OVERSIZED_BYTES = 48 * 1024  # well over the default 32 KiB limit
_EPOCH = datetime(1970, 1, 1)


class Truth(NamedTuple):
    """What the generator did to one record; the answer key for every downstream test.

    reason_code is the dead-letter code a validator must give an invalid record; table is
    where a valid one lands (None for invalid ones). tenant_id/message_id are the ids the
    record was built with (a malformed record may no longer carry them readably). late marks
    a customer event deliberately delayed; event_ms is its event time (usage_start for cost);
    emit_ms is its position on the simulated clock, which is the Kafka record timestamp a
    producer should use.
    """

    valid: bool
    reason_code: str | None
    duplicate_of: int | None
    table: str | None
    tenant_id: str
    message_id: str
    index: int
    late: bool = False
    event_ms: int | None = None
    emit_ms: int = 0


class GeneratedRecord(NamedTuple):
    """One Kafka record: key f"{tenant_id}:{message_id}", raw value bytes and its truth."""

    key: bytes
    value: bytes
    truth: Truth


# --- the simulated world ------------------------------------------------------------------------

# (name, Zipf-like weight, revenue currency, local UTC offset in minutes for iOS timestamps)
_TENANTS = (
    ("acme", 1000, "USD", -300),
    ("globex", 467, "USD", -480),
    ("initech", 299, "EUR", 60),
    ("umbrella-retail", 218, "GBP", 0),
    ("hooli.shop", 170, "USD", -420),
    ("stark_ind", 139, "EUR", 120),
    ("wonka", 118, "USD", 330),
    ("tyrell", 102, "JPY", 540),
)
_FIRST = ("Ana", "Ben", "Chloé", "Dev", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jon", "Kai",
          "Lena", "Mateo", "Nia", "Olek", "Priya", "Quinn", "Rosa", "Sven", "Zoë")  # fmt: skip
_LAST = ("Ng", "Smith", "García", "Okafor", "Müller", "Rossi", "Kowalski", "Tanaka", "Silva",
         "Haddad", "Johansson", "Patel", "Nguyen", "Dubois", "O'Brien")  # fmt: skip
_CATEGORIES = ("shoes", "jackets", "bags", "hats", "socks", "outdoor", "kitchen", "toys")
_CAMPAIGNS = ("black-friday", "cyber-monday", "winback", "welcome", "restock", "holiday-gift")
_USER_AGENTS = {
    "web": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko)"
        " Version/18.1 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    ),
    "ios": ("ShopApp/4.12.0 (iPhone; iOS 18.1; Scale/3.00)", "ShopApp/4.11.2 (iPad; iOS 17.6)"),
    "android": (
        "ShopApp/4.12.0 (Linux; Android 15; Pixel 8)",
        "ShopApp/4.10.1 (Android 14; SM-S918B)",
    ),
}
_LIBRARIES = {
    "web": {"name": "analytics.js", "version": "5.2.1"},
    "ios": {"name": "analytics-swift", "version": "1.6.2"},
    "android": {"name": "analytics-kotlin", "version": "1.16.3"},
}
_ESP_LIBRARY = {"name": "esp-webhooks", "version": "2.4.0"}
_PAGES = ("Home", "Category", "Search", "Product", "Cart", "Checkout")

# (service, usage unit, unit price, savings-plan discount, how many of them per tenant)
_SERVICES = (
    ("AmazonEC2", "Hrs", Decimal("0.0960"), Decimal("0.72"), 6),
    ("AmazonEC2", "Hrs", Decimal("0.3840"), Decimal("0.72"), 3),
    ("AmazonRDS", "Hrs", Decimal("0.1710"), Decimal("1"), 2),
    ("AmazonS3", "GB-Mo", Decimal("0.023"), Decimal("1"), 4),
    ("AWSLambda", "Requests", Decimal("0.0000002"), Decimal("1"), 3),
    ("AmazonCloudFront", "GB", Decimal("0.085"), Decimal("1"), 1),
)
_REGIONS = ("us-east-1", "us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")
_TEAMS = ("checkout", "search", "data", "platform", "growth", "ml")
_ENVS = ("prod", "prod", "prod", "staging", "dev")
_FEATURES = ("recommendations", "cart", "email", "catalog", "reporting")
_MONEY_QUANTUM = Decimal("1e-10")


class _Device:
    __slots__ = ("anonymous_id", "device_id", "ip", "platform", "user_agent")

    def __init__(self, device_id: str, anonymous_id: str, platform: str, agent: str, ip: str):
        self.device_id = device_id
        self.anonymous_id = anonymous_id
        self.platform = platform
        self.user_agent = agent
        self.ip = ip


class _Person:
    __slots__ = ("devices", "email", "first", "identified", "last", "phone", "user_id")

    def __init__(self, user_id: str, first: str, last: str, email: str, phone: str) -> None:
        self.user_id = user_id
        self.first = first
        self.last = last
        self.email = email
        self.phone = phone
        self.devices: list[_Device] = []
        self.identified = False


class _Tenant:
    __slots__ = (
        "campaigns",
        "currency",
        "devices",
        "domain",
        "name",
        "offset",
        "offset_text",
        "people",
        "per_unit",
        "products",
        "resources",
    )

    def __init__(self, name: str, currency: str, offset_minutes: int) -> None:
        self.name = name
        self.currency = currency
        self.per_unit = 1 if currency == "JPY" else 100  # JPY has no minor unit
        self.offset = offset_minutes
        sign = "+" if offset_minutes >= 0 else "-"
        hours, minutes = divmod(abs(offset_minutes), 60)
        self.offset_text = f"{sign}{hours:02d}:{minutes:02d}"
        self.domain = f"{name.replace('_', '-').replace('.', '-')}.example"
        # (sku, name, price in minor units, category)
        self.products: list[tuple[str, str, int, str]] = []
        self.campaigns: list[str] = []
        self.people: list[_Person] = []
        self.devices: list[_Device] = []
        self.resources: list[_Resource] = []


class _Resource:
    __slots__ = ("account", "discount", "price", "region", "resource_id", "service", "tags", "unit")

    def __init__(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self, name, value)


class _Session:
    __slots__ = ("campaign", "device", "person", "steps", "tenant")

    def __init__(self, tenant: _Tenant, person: _Person, device: _Device | None) -> None:
        self.tenant = tenant
        self.person = person
        self.device = device
        self.campaign = ""
        self.steps: list[tuple[str, Any]] = []


# --- the generator ------------------------------------------------------------------------------


class _Generator:
    """All state of one stream. Uses only Random's integer-backed methods, so a seed gives the
    same bytes on every platform."""

    def __init__(self, seed: int, start_ms: int, events_per_second: float) -> None:
        self.rng = Random(seed)
        self.r = self.rng.random
        self.bits = self.rng.getrandbits
        self.start_ms = start_ms
        self.ms_per_record = 1000.0 / events_per_second
        self.tenants = [_Tenant(name, cur, off) for name, _, cur, off in _TENANTS]
        self.tenant_cum: list[int] = []
        total = 0
        for _, weight, _, _ in _TENANTS:
            total += weight
            self.tenant_cum.append(total)
        self.tenant_total = total
        for tenant, (_, weight, _, _) in zip(self.tenants, _TENANTS, strict=True):
            self._build_tenant(tenant, weight)
        self.sessions: list[_Session] = []
        self.recent: list[GeneratedRecord] = []
        self.faults: list[str] = []
        self.iso_cache: dict[int, str] = {}

    # -- small random helpers

    def pick(self, seq: Any) -> Any:
        return seq[int(self.r() * len(seq))]

    def hex(self, digits: int) -> str:
        size = (digits + 1) >> 1
        return self.bits(size << 3).to_bytes(size, "little").hex()[:digits]

    def uuid(self) -> str:
        h = self.hex(32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def iso(self, ms: int, offset_minutes: int = 0, suffix: str = "Z") -> str:
        """ISO-8601 with milliseconds, in the given UTC offset (written independently of the
        validator's parser on purpose)."""
        seconds, millis = divmod(ms + offset_minutes * 60_000, 1000)
        base = self.iso_cache.get(seconds)
        if base is None:
            base = (_EPOCH + timedelta(seconds=seconds)).isoformat()
            if len(self.iso_cache) > 50_000:
                self.iso_cache.clear()
            self.iso_cache[seconds] = base
        return f"{base}.{millis:03d}{suffix}"

    # -- world building

    def _build_tenant(self, tenant: _Tenant, weight: int) -> None:
        r, pick = self.r, self.pick
        for _ in range(20 + weight // 4):
            category = pick(_CATEGORIES)
            cents = pick((499, 999, 1499, 1999, 2999, 4999, 7999, 12999, 19999, 49999))
            name = f"{pick(('Classic', 'Trail', 'Urban', 'Aero', 'Nordic'))} {category[:-1]}"
            tenant.products.append((f"sku-{self.hex(6)}", name, cents, category))
        for name in _CAMPAIGNS:
            tenant.campaigns.append(f"cmp-2611-{name}-{int(r() * 90) + 10}")
        accounts = [f"{int(r() * 9e11) + 100_000_000_000}" for _ in range(2 + int(r() * 3))]
        customers = [f"cust-{self.hex(4)}" for _ in range(4)]
        for service, unit, price, discount, per_tenant in _SERVICES:
            for _ in range(per_tenant * (1 + weight // 300)):
                account, region = pick(accounts), pick(_REGIONS)
                env = pick(_ENVS)
                tags: dict[str, str] | None = None
                if r() >= 0.15:  # ~15% of resources are untagged
                    tags = {"team": pick(_TEAMS), "env": env}
                    if r() < 0.6:
                        tags["feature"] = pick(_FEATURES)
                    if r() < 0.3:
                        tags["customer"] = pick(customers)
                tenant.resources.append(
                    _Resource(
                        service=service,
                        unit=unit,
                        price=price,
                        discount=discount,
                        account=account,
                        region=region,
                        tags=tags,
                        resource_id=self._resource_id(tenant, service, account, region, env),
                    )
                )

    def _resource_id(
        self, tenant: _Tenant, service: str, account: str, region: str, env: str
    ) -> str:
        if service == "AmazonEC2":
            return f"arn:aws:ec2:{region}:{account}:instance/i-0{self.hex(16)}"
        if service == "AmazonRDS":
            return f"arn:aws:rds:{region}:{account}:db:{self.pick(_FEATURES)}-{env}-{self.hex(4)}"
        if service == "AmazonS3":
            return f"arn:aws:s3:::{tenant.domain.split('.')[0]}-{self.pick(_FEATURES)}-{env}"
        if service == "AWSLambda":
            return f"arn:aws:lambda:{region}:{account}:function:{self.pick(_FEATURES)}-{env}"
        return f"arn:aws:cloudfront::{account}:distribution/E{self.hex(13).upper()}"

    def _new_device(self, tenant: _Tenant) -> _Device:
        r = self.r()
        platform = "web" if r < 0.6 else "ios" if r < 0.85 else "android"
        if platform == "web":
            device_id, anonymous_id = f"br-{self.hex(16)}", self.uuid()
        elif platform == "ios":
            device_id, anonymous_id = self.uuid().upper(), self.uuid().upper()
        else:
            device_id, anonymous_id = self.hex(16), self.uuid()
        r = self.r
        ip = f"{int(r() * 200) + 23}.{int(r() * 256)}.{int(r() * 256)}.{int(r() * 254) + 1}"
        device = _Device(device_id, anonymous_id, platform, self.pick(_USER_AGENTS[platform]), ip)
        if len(tenant.devices) < 5000:
            tenant.devices.append(device)
        else:
            tenant.devices[int(self.r() * 5000)] = device
        return device

    def _new_person(self, tenant: _Tenant) -> _Person:
        first, last = self.pick(_FIRST), self.pick(_LAST)
        n = int(self.r() * 1000)
        local = f"{first}.{last}{n}".lower().replace("'", "")
        phone = f"+1{int(self.r() * 8_000_000_000) + 2_000_000_000}" if self.r() < 0.7 else ""
        person = _Person(f"usr_{self.hex(12)}", first, last, f"{local}@mail.example", phone)
        if tenant.devices and self.r() < 0.06:  # a shared family tablet or office computer
            person.devices.append(self.pick(tenant.devices))
        else:
            person.devices.append(self._new_device(tenant))
        if len(tenant.people) < 20_000:
            tenant.people.append(person)
        else:  # bounded memory: churn the population
            tenant.people[int(self.r() * 20_000)] = person
        return person

    def _tenant(self) -> _Tenant:
        point = int(self.r() * self.tenant_total)
        return self.tenants[bisect.bisect_right(self.tenant_cum, point)]

    # -- sessions

    def _new_session(self) -> _Session:
        r = self.r
        tenant = self._tenant()
        if tenant.people and r() < 0.55:
            person = self.pick(tenant.people)
            if len(person.devices) < 3 and r() < 0.25:  # the same person on another device
                person.devices.append(self._new_device(tenant))
                device = person.devices[-1]
            else:
                device = self.pick(person.devices)
        else:
            person = self._new_person(tenant)
            device = person.devices[0]
        session = _Session(tenant, person, device)
        steps = session.steps
        if person.identified and r() < 0.3:
            session.campaign = self.pick(tenant.campaigns)
            steps.append(("open", None))
            if r() >= 0.45:
                return session
            steps.append(("click", None))
        steps.append(("page", "Home" if r() < 0.7 else self.pick(_PAGES)))
        cart: list[tuple[str, str, int, str]] = []
        for _ in range(1 + int(r() * 5)):
            product = self.pick(tenant.products)
            if r() < 0.5:
                steps.append(("page", "Product"))
            steps.append(("view", product))
            if r() < 0.25:
                steps.append(("add", product))
                cart.append(product)
        if cart and r() < 0.45:
            steps.append(("page", "Checkout"))
            if not person.identified:
                steps.append(("identify", None))
                if r() < 0.35:
                    steps.append(("alias", None))
            steps.append(("order", cart))
        elif not person.identified and r() < 0.08:  # newsletter sign-up
            steps.append(("identify", None))
        steps.reverse()  # pop() from the end
        return session

    def _next_session_step(self) -> tuple[_Session, str, Any]:
        sessions = self.sessions
        n = len(sessions)
        p_new = 0.5 if n < 40 else 0.02 if n > 400 else 0.13
        if not n or self.r() < p_new:
            session = self._new_session()
            sessions.append(session)
            i = n
        else:
            i = int(self.r() * n)
            session = sessions[i]
        kind, arg = session.steps.pop()
        if not session.steps:  # finished: swap-remove
            last = sessions.pop()
            if i < len(sessions):
                sessions[i] = last
        return session, kind, arg

    # -- customer events

    def customer_event(self, emit_ms: int, event_ms: int) -> dict[str, Any]:
        """The next event of a random active session, as a raw contract dict."""
        session, kind, arg = self._next_session_step()
        tenant, person, device = session.tenant, session.person, session.device
        r = self.r
        doc: dict[str, Any]
        if kind in ("open", "click"):  # server-side ESP webhook: user_id only, no device
            doc = {
                "type": "track",
                "event": "Email Opened" if kind == "open" else "Email Clicked",
                "message_id": f"esp-{self.hex(24)}",
                "tenant_id": tenant.name,
                "user_id": person.user_id,
                "timestamp": self.iso(event_ms),
                "received_at": self.iso(emit_ms + int(r() * 300)),
                "properties": {"campaign_id": session.campaign, "email_id": f"em-{self.hex(10)}"},
                "context": {"library": _ESP_LIBRARY, "ip": "198.51.100.25"},
            }
            if kind == "click":
                doc["properties"]["url"] = (
                    f"https://{tenant.domain}/?utm_campaign={session.campaign}"
                )
            return doc
        assert device is not None
        platform = device.platform
        message_id = f"ajs-{self.hex(32)}" if platform == "web" else self.uuid()
        doc = {"type": "track", "message_id": message_id, "tenant_id": tenant.name}
        if kind == "page":
            doc["type"] = "page"
            doc["name"] = arg
            path = "/" if arg == "Home" else f"/{arg.lower()}"
            properties: dict[str, Any] = {"url": f"https://{tenant.domain}{path}", "path": path}
            if session.campaign:
                properties["campaign_id"] = session.campaign
        elif kind in ("view", "add"):
            sku, name, cents, category = arg
            doc["event"] = "Product Viewed" if kind == "view" else "Product Added"
            properties = {
                "product_id": sku,
                "name": name,
                "category": category,
                "price": cents / tenant.per_unit if tenant.per_unit > 1 else cents,
                "currency": tenant.currency,
            }
            if kind == "add":
                properties["quantity"] = 1
        elif kind == "order":
            doc["event"] = "Order Completed"
            cents = sum(item[2] for item in arg)
            revenue: Any = cents / 100 if tenant.per_unit > 1 else cents
            if r() < 0.15:  # some SDKs send money as a decimal string
                revenue = f"{cents // 100}.{cents % 100:02d}" if tenant.per_unit > 1 else str(cents)
            properties = {
                "order_id": f"ord-{self.hex(10)}",
                "revenue": revenue,
                "currency": tenant.currency if r() < 0.9 else tenant.currency.lower(),
                "product_ids": [item[0] for item in arg],
            }
            if session.campaign:
                properties["campaign_id"] = session.campaign
        elif kind == "identify":
            doc["type"] = "identify"
            person.identified = True
            properties = {}
            traits: dict[str, Any] = {
                "email": person.email,
                "first_name": person.first,
                "last_name": person.last,
            }
            if person.phone:
                traits["phone"] = person.phone
            doc["traits"] = traits
        else:  # alias: tie the device's anonymous id to the now-known user
            doc["type"] = "alias"
            doc["previous_id"] = device.anonymous_id
            properties = {}
        doc["anonymous_id"] = device.anonymous_id
        if person.identified:
            doc["user_id"] = person.user_id
        if platform == "android":
            doc["timestamp"] = event_ms
            doc["sent_at"] = max(event_ms, emit_ms) + int(r() * 1500)
        elif platform == "ios":
            doc["timestamp"] = self.iso(event_ms, tenant.offset, tenant.offset_text)
            doc["sent_at"] = self.iso(
                max(event_ms, emit_ms) + int(r() * 1500), tenant.offset, tenant.offset_text
            )
        else:
            doc["timestamp"] = self.iso(event_ms)
            if r() < 0.7:
                doc["sent_at"] = self.iso(event_ms + int(r() * 800))
        if properties:
            doc["properties"] = properties
        doc["context"] = {
            "device_id": device.device_id,
            "ip": device.ip,
            "user_agent": device.user_agent,
            "library": _LIBRARIES[platform],
        }
        return doc

    # -- cost records

    def cost_record(self, emit_ms: int) -> dict[str, Any]:
        """One hourly line item for the hour before the stream clock (billing data lags)."""
        r = self.r
        tenant = self._tenant()
        res: _Resource = self.pick(tenant.resources)
        start = emit_ms - emit_ms % _HOUR_MS - _HOUR_MS
        doc: dict[str, Any] = {
            "type": "cost",
            "message_id": f"cur-{self.hex(32)}",
            "tenant_id": tenant.name,
            "service": res.service,
            "account_id": res.account,
            "region": res.region,
            "usage_start": self.iso(start),
            "usage_end": self.iso(start + _HOUR_MS),
            "currency": "USD",
        }
        roll = r()
        if roll < 0.95:
            doc["resource_id"] = res.resource_id
            if r() < 0.5:
                doc["charge_category"] = "Usage"
            quantity = self._quantity(res.unit)
            billed = (quantity * res.price).quantize(_MONEY_QUANTUM)
            effective = (billed * res.discount).quantize(_MONEY_QUANTUM)
            doc["usage_quantity"] = self._money(quantity)
            doc["usage_unit"] = res.unit
        else:  # taxes and credits: no resource, no quantity; credits are negative
            doc["charge_category"] = "Tax" if roll < 0.975 else "Credit"
            billed = Decimal(int(r() * 5_000_000) + 1).scaleb(-6)
            if doc["charge_category"] == "Credit":
                billed = -billed
            effective = billed
        doc["billed_cost"] = self._money(billed)
        doc["effective_cost"] = self._money(effective)
        if res.tags is not None:
            doc["tags"] = res.tags
        elif r() < 0.5:
            doc["tags"] = {}
        return doc

    def _quantity(self, unit: str) -> Decimal:
        r = self.r
        if unit == "Hrs":
            return Decimal(1) if r() < 0.85 else Decimal(int(r() * 3599) + 1).scaleb(-4)
        if unit == "GB-Mo":
            return (Decimal(int(r() * 50_000) + 1) / 730).quantize(_MONEY_QUANTUM)
        if unit == "Requests":
            return Decimal(int(r() * 2_000_000))
        return Decimal(int(r() * 900_000) + 1).scaleb(-3)

    def _money(self, amount: Decimal) -> Any:
        """Mostly exact decimal strings; some JSON numbers, as many exporters write them."""
        if self.r() < 0.2:
            return float(amount)
        return format(amount, "f")

    # -- malformed records

    def malformed(self, doc: dict[str, Any], emit_ms: int) -> tuple[bytes, str]:
        """Break a valid record in one way; returns the bytes and the reason code expected."""
        if not self.faults:
            self.faults = [
                "truncated",
                "concatenated",
                "not_object",
                "missing",
                "wrong_type",
                "unknown_type",
                "bad_timestamp",
                "future",
                "invalid",
                "oversized",
                "encoding",
            ]
            self.rng.shuffle(self.faults)
        fault = self.faults.pop()
        return getattr(self, f"_fault_{fault}")(doc, emit_ms)

    def _fault_truncated(self, doc: dict[str, Any], emit_ms: int) -> tuple[bytes, str]:
        raw = orjson.dumps(doc)
        cut = 1 + int(self.r() * (len(raw) - 2))
        while cut > 1 and raw[cut] & 0xC0 == 0x80:  # a split UTF-8 sequence is bad_encoding
            cut -= 1
        return raw[:cut], MALFORMED_JSON

    def _fault_concatenated(self, doc: dict[str, Any], emit_ms: int) -> tuple[bytes, str]:
        raw = orjson.dumps(doc)
        return (raw + b"," + raw if self.r() < 0.5 else raw + b"}"), MALFORMED_JSON

    def _fault_not_object(self, doc: dict[str, Any], emit_ms: int) -> tuple[bytes, str]:
        value = self.pick(([doc], "event", None, 42))
        return orjson.dumps(value), NOT_AN_OBJECT

    def _fault_missing(self, doc: dict[str, Any], emit_ms: int) -> tuple[bytes, str]:
        kind = doc["type"]
        fields = ["message_id", "tenant_id", "type"]
        if kind == "cost":
            fields += ["usage_start", "usage_end", "service", "account_id", "currency"]
            fields += ["billed_cost", "effective_cost"]
        else:
            fields.append("timestamp")
            if kind == "track":
                fields.append("event")
            if kind == "alias":
                fields.append("previous_id")
            else:
                fields.append("user_id+anonymous_id")
        field = self.pick(fields)
        for name in field.split("+"):
            if self.r() < 0.2:
                doc[name] = None  # null counts as missing
            else:
                doc.pop(name, None)
        return orjson.dumps(doc), MISSING_FIELD

    def _fault_wrong_type(self, doc: dict[str, Any], emit_ms: int) -> tuple[bytes, str]:
        kind = doc["type"]
        choices = ["message_id", "tenant_id"]
        if kind == "cost":
            choices += ["billed_cost", "usage_start", "tags", "service"]
        else:
            choices += ["timestamp", "context"]
            if "properties" in doc:
                choices.append("properties")
            if "user_id" in doc:
                choices.append("user_id")
            if doc.get("event") == "Order Completed":
                choices += ["revenue", "product_ids"]
        field = self.pick(choices)
        bad: dict[str, Any] = {
            "message_id": 1234567,
            "tenant_id": [doc["tenant_id"]],
            "billed_cost": [doc.get("billed_cost")],
            "usage_start": emit_ms / 1000,  # fractional epoch seconds
            "tags": ["team:checkout"],
            "service": {"name": "AmazonEC2"},
            "timestamp": True,
            "context": "ios",
            "properties": "{}",
            "user_id": 40213,
        }
        if field == "revenue":
            doc["properties"]["revenue"] = {"amount": 12.5}
        elif field == "product_ids":
            doc["properties"]["product_ids"] = ",".join(doc["properties"]["product_ids"])
        else:
            doc[field] = bad[field]
        return orjson.dumps(doc), WRONG_TYPE

    def _fault_unknown_type(self, doc: dict[str, Any], emit_ms: int) -> tuple[bytes, str]:
        doc["type"] = self.pick(("screen", "group", "Track", "purchase", "usage", "COST"))
        return orjson.dumps(doc), UNKNOWN_TYPE

    def _fault_bad_timestamp(self, doc: dict[str, Any], emit_ms: int) -> tuple[bytes, str]:
        field = "usage_start" if doc["type"] == "cost" else "timestamp"
        event_ms = emit_ms - emit_ms % _HOUR_MS
        doc[field] = self.pick(
            (
                "yesterday",
                "2026-13-45T10:00:00Z",
                self.iso(event_ms)[:-1],  # no zone
                event_ms // 1000,  # epoch seconds sent as millis: January 1970
                "1999-12-31T23:59:59Z",
                "",
                "Tue, 03 Nov 2026 10:00:00 GMT",
            )
        )
        return orjson.dumps(doc), BAD_TIMESTAMP

    def _fault_future(self, doc: dict[str, Any], emit_ms: int) -> tuple[bytes, str]:
        ahead = min(emit_ms + (30 + int(self.r() * 30)) * _YEAR_MS, _LATEST_MS)
        if doc["type"] == "cost":
            doc["usage_start"] = self.iso(ahead)
            doc["usage_end"] = self.iso(ahead + _HOUR_MS)
        else:
            doc["timestamp"] = self.iso(ahead)
        return orjson.dumps(doc), FUTURE_TIME

    def _fault_invalid(self, doc: dict[str, Any], emit_ms: int) -> tuple[bytes, str]:
        choices = ["tenant_space", "tenant_slash", "empty_id", "long_id"]
        if doc["type"] == "cost":
            choices += ["negative", "end_before_start", "cost_currency", "category", "nan"]
        else:
            if "properties" in doc:
                choices.append("currency")
            if doc.get("event"):
                choices.append("empty_event")
            if doc.get("event") == "Order Completed":
                choices.append("revenue_huge")
        choice = self.pick(choices)
        if choice == "tenant_space":
            doc["tenant_id"] = doc["tenant_id"] + " corp"
        elif choice == "tenant_slash":
            doc["tenant_id"] = doc["tenant_id"] + "/prod"
        elif choice == "empty_id":
            doc["message_id"] = ""
        elif choice == "long_id":
            doc["message_id"] = "m-" + "0123456789abcdef" * 9
        elif choice == "negative":
            doc["charge_category"] = "Usage"
            doc["billed_cost"] = "-12.5"
        elif choice == "end_before_start":
            doc["usage_end"] = self.iso(emit_ms - emit_ms % _HOUR_MS - 2 * _HOUR_MS)
        elif choice == "cost_currency":
            doc["currency"] = "dollars"
        elif choice == "category":
            doc["charge_category"] = "Refund"
        elif choice == "nan":
            doc["effective_cost"] = "NaN"
        elif choice == "currency":
            doc["properties"]["currency"] = self.pick(("US", "EURO", "$$$", "€"))
        elif choice == "empty_event":
            doc["event"] = ""
        else:
            doc["properties"]["revenue"] = "12345678901234.5"  # over Decimal(18, 6)
        return orjson.dumps(doc), INVALID_VALUE

    def _fault_oversized(self, doc: dict[str, Any], emit_ms: int) -> tuple[bytes, str]:
        blob = "".join(self.hex(32) for _ in range(_OVERSIZED_BYTES // 32 + 1))
        field = "tags" if doc["type"] == "cost" else "properties"
        doc[field] = {**(doc.get(field) or {}), "debug_dump": blob}  # tags may be shared
        return orjson.dumps(doc), OVERSIZED

    def _fault_encoding(self, doc: dict[str, Any], emit_ms: int) -> tuple[bytes, str]:
        marker = "__tidemark_raw_bytes__"
        doc["label"] = marker
        raw = orjson.dumps(doc)
        bad = self.pick((b"Jos\xe9 M\xfcller", b"\xff\xfe", b"caf\xc3", b"\xed\xa0\x80", b"\x80"))
        return raw.replace(marker.encode(), bad), BAD_ENCODING


def generate(
    seed: int,
    count: int,
    start_ms: int = DEFAULT_START_MS,
    events_per_second: float = DEFAULT_EVENTS_PER_SECOND,
) -> Iterator[GeneratedRecord]:
    """Yield `count` records (duplicates and malformed included) of a seeded synthetic stream.

    The same arguments always yield byte-identical keys and values.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if events_per_second <= 0:
        raise ValueError(f"events_per_second must be positive, got {events_per_second}")
    gen = _Generator(seed, start_ms, events_per_second)
    rng, r = gen.rng, gen.r
    recent = gen.recent
    stored = 0  # valid originals seen, for the ring of recent ones
    block: list[str] = []
    ms_per_record = gen.ms_per_record
    dumps = orjson.dumps
    for index in range(count):
        if not block:
            block = list(_BLOCK)
            rng.shuffle(block)
        slot = block.pop()
        emit_ms = start_ms + int(index * ms_per_record)
        if slot == "D" and recent:
            original = recent[int(r() * len(recent))]
            truth = original.truth._replace(
                duplicate_of=original.truth.index, index=index, late=False, emit_ms=emit_ms
            )
            yield GeneratedRecord(original.key, original.value, truth)
            continue
        late = slot == "L"
        if slot == "C" or (slot == "M" and r() < 0.1):
            doc = gen.cost_record(emit_ms)
            table = COST_TABLE
            event_ms = emit_ms - emit_ms % _HOUR_MS - _HOUR_MS
        else:
            event_ms = emit_ms
            if late:  # buffered offline: seconds to minutes behind the stream
                lag = 1000 + int(r() * 59_000) if r() < 0.6 else 60_000 + int(r() * 540_000)
                event_ms = emit_ms - lag
            doc = gen.customer_event(emit_ms, event_ms)
            table = EVENTS_TABLE
        tenant_id, message_id = doc["tenant_id"], doc["message_id"]
        key = f"{tenant_id}:{message_id}".encode()
        if slot == "M":
            value, code = gen.malformed(doc, emit_ms)
            truth = Truth(
                False, code, None, None, tenant_id, message_id, index, False, event_ms, emit_ms
            )
            yield GeneratedRecord(key, value, truth)
            continue
        record = GeneratedRecord(
            key,
            dumps(doc),
            Truth(True, None, None, table, tenant_id, message_id, index, late, event_ms, emit_ms),
        )
        if len(recent) < _DUPLICATE_WINDOW:
            recent.append(record)
        else:  # a ring: overwrite the oldest
            recent[stored % _DUPLICATE_WINDOW] = record
        stored += 1
        yield record


# --- the `tidemark gen` command -----------------------------------------------------------------


def _parse_start(text: str) -> int:
    """--start: an ISO-8601 time with a zone, or 'now'; epoch millis."""
    if text == "now":
        return int(time.time() * 1000)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs a time zone (e.g. 'Z'): {text!r}")
    return int((parsed - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


def _truth_line(record: GeneratedRecord) -> bytes:
    """One truth-file object: the Kafka key and every Truth field, by name."""
    t = record.truth
    return orjson.dumps(
        {
            "key": record.key.decode(),
            "valid": t.valid,
            "reason_code": t.reason_code,
            "duplicate_of": t.duplicate_of,
            "table": t.table,
            "tenant_id": t.tenant_id,
            "message_id": t.message_id,
            "index": t.index,
            "late": t.late,
            "event_ms": t.event_ms,
            "emit_ms": t.emit_ms,
        }
    )


def _run(args: argparse.Namespace) -> int:
    """Write the stream (and optionally its truth) and print a one-line summary."""
    began = time.perf_counter()
    totals = {"records": 0, "valid": 0, "duplicates": 0, "malformed": 0}
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(args.out, "wb"))
        truth_file = files.enter_context(open(args.truth, "wb")) if args.truth else None
        for record in generate(args.seed, args.count, args.start, args.rate):
            value, truth = record.value, record.truth
            if b"\n" in value:  # the file format's one invariant
                raise RuntimeError(f"record {truth.index} contains a newline")
            out.write(value)
            out.write(b"\n")
            totals["records"] += 1
            totals["valid"] += truth.valid
            totals["duplicates"] += truth.duplicate_of is not None
            totals["malformed"] += not truth.valid
            if truth_file is not None:
                truth_file.write(_truth_line(record))
                truth_file.write(b"\n")
    elapsed = time.perf_counter() - began
    rate = totals["records"] / elapsed if elapsed else 0.0
    print(
        f"tidemark gen: wrote {totals['records']} records to {args.out}"
        f" ({totals['valid']} valid incl. {totals['duplicates']} duplicates,"
        f" {totals['malformed']} malformed) in {elapsed:.2f}s, {rate:,.0f} records/s",
        file=sys.stderr,
    )
    return 0


def register(subparsers: Any) -> None:
    """Add `tidemark gen` to the CLI."""
    parser = subparsers.add_parser(
        "gen",
        help="write a deterministic synthetic event stream (newline-delimited bytes)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--seed", type=int, required=True, help="same seed, same bytes")
    parser.add_argument("--count", type=int, required=True, help="records to write, all included")
    parser.add_argument("--out", required=True, help="output file: one raw value per line")
    parser.add_argument("--truth", help="also write one JSON truth object (with the key) per line")
    parser.add_argument(
        "--start",
        type=_parse_start,
        default=DEFAULT_START_MS,
        help="simulated clock at the first record: ISO-8601 with zone, or 'now'"
        " (default 2026-11-01T00:00:00Z)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_EVENTS_PER_SECOND,
        help="records per second of simulated time (default 1000)",
    )
    parser.set_defaults(func=_run)
