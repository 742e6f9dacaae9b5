"""Parse, validate and map one raw Kafka record to a ClickHouse row, or to a dead letter.

This runs inside the Flink Python operator on every record, so it is written for throughput:
orjson parses, the happy path makes no exceptions, no regular expressions and one row dict, and
the few expensive things (exact re-parsing of float literals, UTF-8 diagnosis, base64) happen
only for the records that need them. Rejections travel as a private exception so each check is
one line on the happy path and the reason text is written where the rule is.

`validate` never raises: a record that is not accepted becomes a dead-letter row, because one
poison record must not fail the job and replay forever. The rules themselves (fields, limits,
reason codes) are defined in `udfs.contract` and explained in `schemas/EVENTS.md`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, NamedTuple

import orjson

from udfs.contract import (
    BAD_ENCODING,
    BAD_TIMESTAMP,
    CHARGE_CATEGORIES,
    CHARGE_CLASSES,
    COST_DECIMAL,
    COST_TABLE,
    COST_TYPE,
    CUSTOMER_TYPES,
    DEFAULT_CHARGE_CATEGORY,
    EVENT_TYPES,
    EVENTS_TABLE,
    FOCUS_TYPE,
    FUTURE_TIME,
    IDENTITY_REQUIRED_TYPES,
    INTERNAL_ERROR,
    INVALID_VALUE,
    MALFORMED_JSON,
    MAX_EVENT_TIME_MS,
    MAX_MESSAGE_ID_CHARS,
    MAX_TENANT_ID_CHARS,
    MIN_EVENT_TIME_MS,
    MISSING_FIELD,
    NEGATIVE_COST_CATEGORIES,
    NOT_AN_OBJECT,
    OVERSIZED,
    QUANTITY_REQUIRED_CATEGORIES,
    RAW_BASE64,
    RAW_UTF8,
    REVENUE_DECIMAL,
    TENANT_ID_CHARS,
    UNKNOWN_TYPE,
    WRONG_TYPE,
    ZERO,
)
from udfs.focus import SOURCE_COLUMNS, focus_row_to_record, message_id_for


# No slots=True on these dataclasses: jobs pickle this package by value (see
# jobs/environment.py), and cloudpickle 2.2 rebuilds slotted dataclass instances without their
# attributes. tests/test_job_pickling.py guards this.
@dataclass(frozen=True)
class SourceMeta:
    """Where a record came from: its Kafka position and the record's (producer) timestamp."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True)
class ValidationLimits:
    """The configurable limits of the contract (`ingest.max_event_bytes` and friends)."""

    max_event_bytes: int = 32768
    max_future_seconds: int = 3600


class Accepted(NamedTuple):
    """A valid record: the destination table and the row, exactly its columns minus ingested_at."""

    table: str
    tenant_id: str
    message_id: str
    row: dict[str, Any]


class Rejected(NamedTuple):
    """An invalid record: why, and the dead_letters row (its columns minus dead_at)."""

    reason_code: str
    reason: str
    row: dict[str, Any]


class _Reject(Exception):
    """Raised by a check to stop validation with a reason code and a precise human reason.

    A control-flow signal, not an error: it never leaves this module.
    """

    __slots__ = ("code", "reason")

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason


_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_EMPTY: dict[str, Any] = {}
_REASON_VALUE_CHARS = 80  # how much of an offending value a reason quotes
# Wide enough for any Decimal(38, s) result, so quantize() never rounds at the context level.
_DECIMAL_CONTEXT = Context(prec=80)
_SCALES = {scale: Decimal(1).scaleb(-scale) for scale in (REVENUE_DECIMAL[1], COST_DECIMAL[1])}

# --- small helpers ------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    """The JSON Schema name of a parsed value's type, for reasons a JSON sender understands."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    cls = value.__class__
    if cls is int:
        return "integer"
    if cls is float:
        return "number"
    if cls is str:
        return "string"
    if cls is list:
        return "array"
    if cls is dict:
        return "object"
    return cls.__name__


def _quote(value: Any) -> str:
    """repr() of a value, shortened so a huge bad value cannot bloat the dead-letter reason."""
    text = repr(value)
    if len(text) > _REASON_VALUE_CHARS:
        return text[: _REASON_VALUE_CHARS - 3] + "..."
    return text


def _missing(obj: dict[str, Any], key: str, name: str) -> _Reject:
    """missing_field for an absent key, with a different wording when the key is JSON null."""
    if key in obj:
        return _Reject(MISSING_FIELD, f"required field '{name}' is null")
    return _Reject(MISSING_FIELD, f"missing required field '{name}'")


def _wrong(name: str, expected: str, value: Any) -> _Reject:
    return _Reject(WRONG_TYPE, f"field '{name}' must be {expected}, got {_json_type(value)}")


def _req_str(obj: dict[str, Any], key: str, name: str) -> str:
    """A required, non-empty string field."""
    value = obj.get(key)
    if value.__class__ is str:
        if value:
            return value
        raise _Reject(INVALID_VALUE, f"field '{name}' must not be empty")
    if value is None:
        raise _missing(obj, key, name)
    raise _wrong(name, "a string", value)


def _opt_str(obj: dict[str, Any], key: str, name: str) -> str:
    """An optional string field; absent or null reads as "" (the column's empty value)."""
    value = obj.get(key)
    if value.__class__ is str:
        return value
    if value is None:
        return ""
    raise _wrong(name, "a string", value)


def _opt_obj(obj: dict[str, Any], key: str, name: str) -> dict[str, Any] | None:
    """An optional JSON object field; None when absent or null."""
    value = obj.get(key)
    if value is None or value.__class__ is dict:
        return value
    raise _wrong(name, "an object", value)


_tenant_ok: dict[str, bool] = {}


def _check_tenant(tenant_id: str) -> None:
    """tenant_id charset/length; memoised because tenants are few and the set test is not free."""
    ok = _tenant_ok.get(tenant_id)
    if ok is None:
        ok = len(tenant_id) <= MAX_TENANT_ID_CHARS and TENANT_ID_CHARS.issuperset(tenant_id)
        if len(_tenant_ok) > 10_000:  # bounded: a flood of junk tenants must not grow memory
            _tenant_ok.clear()
        _tenant_ok[tenant_id] = ok
    if not ok:
        raise _Reject(
            INVALID_VALUE,
            f"field 'tenant_id' must be 1-{MAX_TENANT_ID_CHARS} characters of A-Z a-z 0-9 _ . -,"
            f" got {_quote(tenant_id)}",
        )


def _currency(value: Any, name: str) -> str:
    """An ISO-4217 code: three ASCII letters, upper-cased (senders often write 'usd')."""
    if value.__class__ is not str:
        raise _wrong(name, "a string", value)
    if len(value) == 3 and value.isascii() and value.isalpha():
        return value if value.isupper() else value.upper()
    raise _Reject(
        INVALID_VALUE, f"field '{name}' must be a 3-letter ISO-4217 code, got {_quote(value)}"
    )


# --- time ---------------------------------------------------------------------------------------


def _parse_time(name: str, value: Any) -> int:
    """A time field as epoch millis: an ISO-8601 string with a zone, or integer epoch millis.

    Sub-millisecond digits are truncated, matching the DateTime64(3) columns.
    """
    cls = value.__class__
    if cls is str:
        try:
            parsed = datetime.fromisoformat(value)
        except (ValueError, OverflowError):
            raise _Reject(
                BAD_TIMESTAMP, f"field '{name}' is not an ISO-8601 time: {_quote(value)}"
            ) from None
        if parsed.tzinfo is None:
            raise _Reject(
                BAD_TIMESTAMP,
                f"field '{name}' has no time zone (add 'Z' or an offset): {_quote(value)}",
            )
        delta = parsed - _UTC_EPOCH
        ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    elif cls is int:
        ms = value
    else:
        raise _wrong(name, "an ISO-8601 string or integer epoch millis", value)
    if ms < MIN_EVENT_TIME_MS:
        hint = " (integer times are epoch milliseconds)" if cls is int else ""
        raise _Reject(BAD_TIMESTAMP, f"field '{name}' is before 2000-01-01: {_quote(value)}{hint}")
    if ms > MAX_EVENT_TIME_MS:
        raise _Reject(BAD_TIMESTAMP, f"field '{name}' is after 2299-12-31: {_quote(value)}")
    return ms


_second_text: dict[int, str] = {}


def _ms_text(ms: int) -> str:
    """Epoch millis as ClickHouse DateTime64(3) text in UTC, 'YYYY-MM-DD hh:mm:ss.fff'.

    Memoised per second: a stream's timestamps cluster, and datetime formatting costs more
    than the rest of a row.
    """
    seconds, millis = divmod(ms, 1000)
    text = _second_text.get(seconds)
    if text is None:
        text = (_NAIVE_EPOCH + timedelta(seconds=seconds)).isoformat(" ")
        if len(_second_text) > 100_000:
            _second_text.clear()
        _second_text[seconds] = text
    return f"{text}.{millis:03d}"


def _produced_text(timestamp_ms: int) -> str:
    """The Kafka record timestamp; -1 ("no timestamp") and other negatives become the epoch."""
    return _ms_text(timestamp_ms if timestamp_ms > 0 else 0)


# --- decimals -----------------------------------------------------------------------------------


def _exact_floats(raw: bytes, name: str) -> Any:
    """Re-parse a payload keeping float literals as Decimal: orjson reads them as binary floats,
    which cannot hold every decimal the sender wrote. Only records carrying a float money field
    pay for this."""
    try:
        return json.loads(raw, parse_float=Decimal)
    except (RecursionError, ValueError):  # orjson nests deeper than the stdlib parser
        raise _Reject(
            INVALID_VALUE, f"field '{name}' cannot be read exactly: payload is nested too deeply"
        ) from None


def _decimal(name: str, value: Any) -> Decimal:
    """A decimal field's value, exactly as written. Floats must be resolved by the caller."""
    cls = value.__class__
    if cls is Decimal:
        return value
    if cls is int:
        return Decimal(value)
    if cls is str:
        # Decimal() also accepts whitespace, '_' separators and non-ASCII digits; the contract
        # does not, so that 1_000 or '١٢' never silently becomes a number.
        if value and value.isascii() and "_" not in value and value.strip() == value:
            try:
                parsed = Decimal(value)
            except (ArithmeticError, ValueError):  # InvalidOperation and exponent overflow
                parsed = None
            if parsed is not None:
                if parsed.is_finite():
                    return parsed
                raise _Reject(
                    INVALID_VALUE, f"field '{name}' must be a finite number, got {value!r}"
                )
        raise _Reject(INVALID_VALUE, f"field '{name}' is not a decimal number: {_quote(value)}")
    raise _wrong(name, "a decimal number", value)


def _decimal_text(name: str, value: Decimal, spec: tuple[int, int]) -> str:
    """The text of a decimal for a Decimal(precision, scale) column: digits beyond the scale
    are rounded half-to-even (so ClickHouse never decides), every other digit is kept as
    written, and a value with too many integer digits is invalid_value."""
    if not value.is_finite():
        raise _Reject(INVALID_VALUE, f"field '{name}' must be a finite number, got '{value}'")
    precision, scale = spec
    integer_digits = precision - scale
    fitted = value
    if value.as_tuple().exponent < -scale and value.adjusted() < integer_digits:
        fitted = value.quantize(_SCALES[scale], ROUND_HALF_EVEN, _DECIMAL_CONTEXT)
    if not fitted:
        return "0"
    if fitted.adjusted() >= integer_digits:  # also catches a carry: 99.9999 -> 100.000
        raise _Reject(
            INVALID_VALUE,
            f"field '{name}' has more than {integer_digits} integer digits: {_quote(str(value))}",
        )
    return format(fitted, "f")


# --- customer events ----------------------------------------------------------------------------


def _dump(name: str, value: dict[str, Any] | None) -> str:
    """A JSON object as compact text for the String columns; "{}" when absent."""
    if not value:
        return "{}"
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:  # nesting deeper than orjson writes
        raise _Reject(INVALID_VALUE, f"field '{name}' cannot be stored as JSON: {exc}") from None


def _product_ids(properties: dict[str, Any]) -> list[str]:
    """properties.product_ids (array of strings), else [properties.product_id], else []."""
    ids = properties.get("product_ids")
    if ids is None:
        one = properties.get("product_id")
        if one is None:
            return []
        if one.__class__ is str:
            return [one]
        raise _wrong("properties.product_id", "a string", one)
    if ids.__class__ is not list:
        raise _wrong("properties.product_ids", "an array of strings", ids)
    for i, item in enumerate(ids):
        if item.__class__ is not str:
            raise _wrong(f"properties.product_ids[{i}]", "a string", item)
    return ids


def _revenue(properties: dict[str, Any], raw: bytes) -> str | None:
    value = properties.get("revenue")
    if value is None:
        return None
    if value.__class__ is float:
        value = _exact_floats(raw, "properties.revenue")["properties"]["revenue"]
    return _decimal_text(
        "properties.revenue", _decimal("properties.revenue", value), REVENUE_DECIMAL
    )


def _person_field(traits: dict[str, Any], context_traits: Any, key: str) -> str:
    """traits.<key>, else context.traits.<key> (where Segment's track calls carry traits)."""
    value = traits.get(key)
    if value is None:
        if context_traits.__class__ is dict:
            fallback = context_traits.get(key)
            if fallback.__class__ is str:
                return fallback
        return ""
    if value.__class__ is str:
        return value
    raise _wrong(f"traits.{key}", "a string", value)


def _customer(
    doc: dict[str, Any],
    kind: str,
    tenant_id: str,
    message_id: str,
    raw: bytes,
    meta: SourceMeta,
    limits: ValidationLimits,
    now_ms: int,
) -> Accepted:
    """Check a track / identify / alias / page event and build its `events` row."""
    timestamp = doc.get("timestamp")
    if timestamp is None:
        raise _missing(doc, "timestamp", "timestamp")
    event_ms = _parse_time("timestamp", timestamp)

    anonymous_id = _opt_str(doc, "anonymous_id", "anonymous_id")
    user_id = _opt_str(doc, "user_id", "user_id")
    previous_id = ""
    event = ""
    if kind == "track":
        event = _req_str(doc, "event", "event")
    elif kind == "page":
        event = _opt_str(doc, "name", "name")
    elif kind == "alias":
        previous_id = _req_str(doc, "previous_id", "previous_id")
        if not user_id:
            user_id = _req_str(doc, "user_id", "user_id")
    if not user_id and not anonymous_id and kind in IDENTITY_REQUIRED_TYPES:
        raise _Reject(
            MISSING_FIELD, f"missing required field 'user_id' or 'anonymous_id' ({kind} needs one)"
        )

    traits = _opt_obj(doc, "traits", "traits")
    properties = _opt_obj(doc, "properties", "properties")
    context = _opt_obj(doc, "context", "context")

    email = phone = ""
    context_traits = context.get("traits") if context else None
    if traits or context_traits:
        traits_in = traits or _EMPTY
        email = _person_field(traits_in, context_traits, "email")
        phone = _person_field(traits_in, context_traits, "phone")
    device_id = _opt_str(context, "device_id", "context.device_id") if context else ""
    if properties:
        campaign_id = _opt_str(properties, "campaign_id", "properties.campaign_id")
        revenue = _revenue(properties, raw)
        currency = properties.get("currency")
        if currency is None or currency == "":
            currency = ""
        else:
            currency = _currency(currency, "properties.currency")
        product_ids = _product_ids(properties)
    else:
        campaign_id = currency = ""
        revenue = None
        product_ids = []

    sent_at = doc.get("sent_at")
    if sent_at is not None:
        sent_at = _ms_text(_parse_time("sent_at", sent_at))
    received_at = doc.get("received_at")
    if received_at is not None:
        received_at = _ms_text(_parse_time("received_at", received_at))

    traits_text = _dump("traits", traits)
    properties_text = _dump("properties", properties)
    context_text = _dump("context", context)
    _check_future(event_ms, now_ms, limits)

    return Accepted(
        EVENTS_TABLE,
        tenant_id,
        message_id,
        {
            "tenant_id": tenant_id,
            "message_id": message_id,
            "type": kind,
            "event": event,
            "anonymous_id": anonymous_id,
            "user_id": user_id,
            "previous_id": previous_id,
            "email": email,
            "phone": phone,
            "device_id": device_id,
            "campaign_id": campaign_id,
            "revenue": revenue,
            "currency": currency,
            "product_ids": product_ids,
            "traits": traits_text,
            "properties": properties_text,
            "context": context_text,
            "event_time": _ms_text(event_ms),
            "sent_at": sent_at,
            "received_at": received_at,
            "source_partition": meta.partition,
            "source_offset": meta.offset,
            "produced_at": _produced_text(meta.timestamp_ms),
        },
    )


def _check_future(event_ms: int, now_ms: int, limits: ValidationLimits) -> None:
    ahead_ms = event_ms - now_ms
    if ahead_ms > limits.max_future_seconds * 1000:
        raise _Reject(
            FUTURE_TIME,
            f"event time {_ms_text(event_ms)} is {ahead_ms // 1000} s after now"
            f" ({_ms_text(now_ms)}), over the {limits.max_future_seconds} s limit",
        )


# --- cost records -------------------------------------------------------------------------------


def _req_time(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if value is None:
        raise _missing(doc, key, key)
    return _parse_time(key, value)


def _cost(
    doc: dict[str, Any],
    tenant_id: str,
    message_id: str,
    raw: bytes,
    meta: SourceMeta,
    limits: ValidationLimits,
    now_ms: int,
    focus: bool = False,
) -> Accepted:
    """Check a cost record and build its `cost_records` row. Money stays Decimal end to end.

    `focus`: the record was mapped from a FOCUS row, so FOCUS's rules apply: costs and
    quantities may have any sign, and a Usage row without quantity or unit is kept (0, "")
    rather than losing its cost.
    """
    start_ms = _req_time(doc, "usage_start")
    end_ms = _req_time(doc, "usage_end")
    if end_ms < start_ms:
        raise _Reject(
            INVALID_VALUE,
            f"field 'usage_end' ({_ms_text(end_ms)}) is before"
            f" 'usage_start' ({_ms_text(start_ms)})",
        )
    service = _req_str(doc, "service", "service")
    account_id = _req_str(doc, "account_id", "account_id")
    resource_id = _opt_str(doc, "resource_id", "resource_id")
    region = _opt_str(doc, "region", "region")
    category = _opt_str(doc, "charge_category", "charge_category") or DEFAULT_CHARGE_CATEGORY
    if category not in CHARGE_CATEGORIES:
        raise _Reject(
            INVALID_VALUE,
            f"field 'charge_category' must be one of {', '.join(sorted(CHARGE_CATEGORIES))},"
            f" got {_quote(category)}",
        )
    charge_class = _opt_str(doc, "charge_class", "charge_class")
    if charge_class and charge_class not in CHARGE_CLASSES:
        raise _Reject(
            INVALID_VALUE,
            f"field 'charge_class' must be empty or one of {', '.join(sorted(CHARGE_CLASSES))},"
            f" got {_quote(charge_class)}",
        )
    any_sign = focus or bool(charge_class) or category in NEGATIVE_COST_CATEGORIES
    quantity_required = not focus and category in QUANTITY_REQUIRED_CATEGORIES
    currency = doc.get("currency")
    if currency is None:
        raise _missing(doc, "currency", "currency")
    currency = _currency(currency, "currency")

    exact: Any = None  # the float-preserving re-parse, made at most once
    money: list[str] = []
    for key in ("billed_cost", "effective_cost"):
        value = doc.get(key)
        if value is None:
            raise _missing(doc, key, key)
        if value.__class__ is float:
            exact = exact or _exact_floats(raw, key)
            value = exact[key]
        amount = _decimal(key, value)
        if amount < ZERO and not any_sign:
            raise _Reject(
                INVALID_VALUE,
                f"field '{key}' must not be negative for charge_category '{category}',"
                f" got '{amount}' (only Credit, Adjustment and Correction charges may be negative)",
            )
        money.append(_decimal_text(key, amount, COST_DECIMAL))

    quantity_value = doc.get("usage_quantity")
    if quantity_value is None:
        if quantity_required:
            raise _missing(doc, "usage_quantity", "usage_quantity")
        quantity = "0"
    else:
        if quantity_value.__class__ is float:
            exact = exact or _exact_floats(raw, "usage_quantity")
            quantity_value = exact["usage_quantity"]
        amount = _decimal("usage_quantity", quantity_value)
        if amount < ZERO and not focus:
            raise _Reject(
                INVALID_VALUE, f"field 'usage_quantity' must not be negative, got '{amount}'"
            )
        quantity = _decimal_text("usage_quantity", amount, COST_DECIMAL)
    if quantity_required:
        unit = _req_str(doc, "usage_unit", "usage_unit")
    else:
        unit = _opt_str(doc, "usage_unit", "usage_unit")

    tags = _opt_obj(doc, "tags", "tags")
    if tags:
        for key, value in tags.items():
            if value.__class__ is not str:
                raise _wrong(f"tags.{key}", "a string", value)
    else:
        tags = {}
    billing_account_id = _opt_str(doc, "billing_account_id", "billing_account_id")
    provider = _opt_str(doc, "provider", "provider")
    _check_future(start_ms, now_ms, limits)

    return Accepted(
        COST_TABLE,
        tenant_id,
        message_id,
        {
            "tenant_id": tenant_id,
            "message_id": message_id,
            "resource_id": resource_id,
            "service": service,
            "account_id": account_id,
            "region": region,
            "charge_category": category,
            "usage_start": _ms_text(start_ms),
            "usage_end": _ms_text(end_ms),
            "billed_cost": money[0],
            "effective_cost": money[1],
            "currency": currency,
            "usage_quantity": quantity,
            "usage_unit": unit,
            "tags": tags,
            "source_partition": meta.partition,
            "source_offset": meta.offset,
            "produced_at": _produced_text(meta.timestamp_ms),
            "billing_account_id": billing_account_id,
            "provider": provider,
            "charge_class": charge_class,
        },
    )


# --- FOCUS rows ---------------------------------------------------------------------------------

# A contract field name quoted in a reason, e.g. 'billed_cost' or 'tags.team'.
_QUOTED_FIELD = re.compile(r"'([a-z_]+)((?:\.[^']*)?)'")


def _focus_reason(reason: str) -> str:
    """A cost-record reason in the FOCUS column names the sender wrote ('BilledCost')."""

    def name(match: re.Match[str]) -> str:
        column = SOURCE_COLUMNS.get(match.group(1))
        return f"'{column}{match.group(2)}'" if column else match.group(0)

    return _QUOTED_FIELD.sub(name, reason)


def _focus(
    doc: dict[str, Any], raw: bytes, meta: SourceMeta, limits: ValidationLimits, now_ms: int
) -> Accepted:
    """Check a `focus` record: map its FOCUS row (udfs/focus.py) and judge it as a cost record
    under FOCUS's rules. message_id is optional: the row's hash, as `produce --focus` sends."""
    tenant_id = _req_str(doc, "tenant_id", "tenant_id")
    _check_tenant(tenant_id)
    row = doc.get("focus")
    if row.__class__ is not dict:
        if row is None:
            raise _missing(doc, "focus", "focus")
        raise _wrong("focus", "an object of FOCUS columns", row)
    if any(value.__class__ is float for value in row.values()):  # JSON numbers: read exactly
        row = _exact_floats(raw, "focus")["focus"]
    message_id = doc.get("message_id")
    if message_id is None:
        message_id = message_id_for(row, tenant_id)
    else:
        message_id = _req_str(doc, "message_id", "message_id")
        _check_message_id(message_id)
    record = focus_row_to_record(row, tenant_id, message_id)
    try:
        return _cost(record, tenant_id, message_id, raw, meta, limits, now_ms, focus=True)
    except _Reject as rejection:
        raise _Reject(rejection.code, _focus_reason(rejection.reason)) from None


# --- dead letters -------------------------------------------------------------------------------


def record_id(raw: bytes, timestamp_ms: int) -> str:
    """The identity of a Kafka record beside its position: a hash of its timestamp and payload.

    A Flink replay re-reads the same record (same timestamp, same bytes): same id, so the
    replayed dead letter collapses onto the first. A broker restart or topic re-creation
    starts offsets again at 0, and a different record at a reused position gets another id,
    so it is kept beside the earlier dead letter instead of replacing it.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(timestamp_ms.to_bytes(8, "big", signed=True))
    digest.update(raw)
    return digest.hexdigest()


def _dead_letter(
    raw: bytes, meta: SourceMeta, code: str, reason: str, doc: Any, utf8_ok: bool | None = None
) -> Rejected:
    """The dead_letters row: where the record came from, why, and the payload itself."""
    tenant_id = message_id = ""
    if doc.__class__ is dict:
        value = doc.get("tenant_id")
        if value.__class__ is str:
            tenant_id = value[:256]
        value = doc.get("message_id")
        if value.__class__ is str:
            message_id = value[:256]
    text = None
    if utf8_ok is not False:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if text is None:
        text, encoding = base64.b64encode(raw).decode("ascii"), RAW_BASE64
    else:
        encoding = RAW_UTF8
    return Rejected(
        code,
        reason,
        {
            "source_topic": meta.topic,
            "source_partition": meta.partition,
            "source_offset": meta.offset,
            "produced_at": _produced_text(meta.timestamp_ms),
            "tenant_id": tenant_id,
            "message_id": message_id,
            "reason_code": code,
            "reason": reason,
            "raw": text,
            "raw_encoding": encoding,
            "record_id": record_id(raw, meta.timestamp_ms),
        },
    )


def ms_text(ms: int) -> str:
    """Epoch millis as ClickHouse DateTime64(3) text in UTC (for other stages' rows)."""
    return _ms_text(ms)


def reject_raw(raw: bytes, meta: SourceMeta, code: str, reason: str) -> Rejected:
    """A dead letter for a record some other parser refused (e.g. a dimension change)."""
    return _dead_letter(raw, meta, code, reason, None)


def _as_bytes(raw: Any) -> bytes:
    """Coerce what a Kafka deserializer might hand over (None for a tombstone, str, bytearray)."""
    if raw is None:
        return b""
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    return bytes(raw)


# --- entry point --------------------------------------------------------------------------------


def _validate(
    raw: bytes, meta: SourceMeta, limits: ValidationLimits, now_ms: int
) -> Accepted | Rejected:
    size = len(raw)
    if size > limits.max_event_bytes:
        return _dead_letter(
            raw,
            meta,
            OVERSIZED,
            f"payload is {size} bytes, over the {limits.max_event_bytes}-byte limit",
            None,
        )
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            return _dead_letter(
                raw,
                meta,
                BAD_ENCODING,
                f"payload is not valid UTF-8: {bad.reason} at byte offset {bad.start}",
                None,
                utf8_ok=False,
            )
        return _dead_letter(raw, meta, MALFORMED_JSON, f"payload is not valid JSON: {exc}", None)
    if doc.__class__ is not dict:
        return _dead_letter(
            raw,
            meta,
            NOT_AN_OBJECT,
            f"top-level JSON value must be an object, got {_json_type(doc)}",
            doc,
        )
    try:
        if doc.get("type") == FOCUS_TYPE:
            return _focus(doc, raw, meta, limits, now_ms)
        message_id = _req_str(doc, "message_id", "message_id")
        _check_message_id(message_id)
        tenant_id = _req_str(doc, "tenant_id", "tenant_id")
        _check_tenant(tenant_id)
        kind = _record_type(doc)
        if kind == COST_TYPE:
            return _cost(doc, tenant_id, message_id, raw, meta, limits, now_ms)
        return _customer(doc, kind, tenant_id, message_id, raw, meta, limits, now_ms)
    except _Reject as rejection:
        return _dead_letter(raw, meta, rejection.code, rejection.reason, doc)


def _check_message_id(message_id: str) -> None:
    if len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise _Reject(
            INVALID_VALUE,
            f"field 'message_id' must be at most {MAX_MESSAGE_ID_CHARS} characters,"
            f" got {len(message_id)}",
        )


def _record_type(doc: dict[str, Any]) -> str:
    """The record type; an empty or unlisted value is unknown_type, not invalid_value."""
    kind = doc.get("type")
    if kind.__class__ is str:
        if kind in CUSTOMER_TYPES or kind == COST_TYPE:
            return kind
        raise _Reject(
            UNKNOWN_TYPE, f"unknown type {_quote(kind)} (expected one of: {', '.join(EVENT_TYPES)})"
        )
    if kind is None:
        raise _missing(doc, "type", "type")
    raise _wrong("type", "a string", kind)


def validate(
    raw: bytes, meta: SourceMeta, limits: ValidationLimits, now_ms: int
) -> Accepted | Rejected:
    """Validate one raw record: Accepted(table, tenant_id, message_id, row) or Rejected.

    `now_ms` is the caller's clock (the operator's processing time), passed in so that tests
    and replays are deterministic. Never raises: even a validator bug yields a dead letter
    with reason code internal_error, keeping the payload for a later replay.
    """
    try:
        if raw.__class__ is not bytes:
            raw = _as_bytes(raw)
        return _validate(raw, meta, limits, now_ms)
    except Exception as exc:  # the never-raise guarantee; see INTERNAL_ERROR in the contract
        try:
            return _dead_letter(
                _as_bytes(raw) if raw.__class__ is not bytes else raw,
                meta,
                INTERNAL_ERROR,
                f"validator error: {type(exc).__name__}: {exc}",
                None,
            )
        except Exception:
            return Rejected(INTERNAL_ERROR, f"validator error: {type(exc).__name__}", {})
