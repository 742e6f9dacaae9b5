"""udfs.validation: every reason code with its exact reason, exact rows for every record type,
timestamps in every accepted format, decimal exactness, and the never-raise guarantee."""

from __future__ import annotations

import base64
import random
import time
from decimal import Decimal
from typing import Any

import orjson
import pytest

from udfs.contract import (
    COST_COLUMNS,
    DEAD_LETTER_COLUMNS,
    EVENTS_COLUMNS,
    REASON_CODES,
)
from udfs.validation import (
    Accepted,
    Rejected,
    SourceMeta,
    ValidationLimits,
    record_id,
    validate,
)

PRODUCED_MS = 1_793_491_200_500  # 2026-11-01 00:00:00.500
NOW_MS = 1_793_491_260_000  # 2026-11-01 00:01:00.000
META = SourceMeta("tidemark.events", 3, 1234, PRODUCED_MS)
LIMITS = ValidationLimits()


def run(payload: Any, limits: ValidationLimits = LIMITS, now_ms: int = NOW_MS) -> Any:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return validate(raw, META, limits, now_ms)


def accepted(payload: Any) -> Accepted:
    result = run(payload)
    assert isinstance(result, Accepted), result
    return result


def rejected(payload: Any, **kwargs: Any) -> Rejected:
    result = run(payload, **kwargs)
    assert isinstance(result, Rejected), result
    return result


def track(**overrides: Any) -> dict[str, Any]:
    event = {
        "message_id": "m-1",
        "tenant_id": "acme",
        "type": "track",
        "event": "Order Completed",
        "anonymous_id": "anon-1",
        "user_id": "u-1",
        "timestamp": "2026-11-01T00:00:00.123Z",
        "properties": {
            "revenue": 59.98,
            "currency": "usd",
            "product_ids": ["sku-1", "sku-2"],
            "campaign_id": "cmp-1",
        },
        "context": {"device_id": "dev-1", "ip": "203.0.113.9", "user_agent": "Mozilla/5.0"},
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def cost(**overrides: Any) -> dict[str, Any]:
    record = {
        "message_id": "c-1",
        "tenant_id": "acme",
        "type": "cost",
        "resource_id": "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc",
        "service": "AmazonEC2",
        "account_id": "123456789012",
        "region": "us-east-1",
        "usage_start": "2026-11-01T00:00:00Z",
        "usage_end": "2026-11-01T01:00:00Z",
        "billed_cost": "0.0960",
        "effective_cost": "0.06912",
        "currency": "USD",
        "usage_quantity": "1",
        "usage_unit": "Hrs",
        "tags": {"team": "checkout", "env": "prod"},
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not ...}


# --- exact rows ---------------------------------------------------------------------------------

BASE_EVENT_ROW = {
    "tenant_id": "acme",
    "message_id": "m-1",
    "previous_id": "",
    "email": "",
    "phone": "",
    "device_id": "",
    "campaign_id": "",
    "revenue": None,
    "currency": "",
    "product_ids": [],
    "traits": "{}",
    "properties": "{}",
    "context": "{}",
    "sent_at": None,
    "received_at": None,
    "source_partition": 3,
    "source_offset": 1234,
    "produced_at": "2026-11-01 00:00:00.500",
}


def test_track_maps_to_exact_events_row() -> None:
    result = accepted(track(sent_at=1_793_491_200_400, received_at="2026-11-01T00:00:00.450Z"))
    assert result.table == "events"
    assert (result.tenant_id, result.message_id) == ("acme", "m-1")
    assert result.row == {
        **BASE_EVENT_ROW,
        "type": "track",
        "event": "Order Completed",
        "anonymous_id": "anon-1",
        "user_id": "u-1",
        "device_id": "dev-1",
        "campaign_id": "cmp-1",
        "revenue": "59.98",
        "currency": "USD",
        "product_ids": ["sku-1", "sku-2"],
        "properties": '{"revenue":59.98,"currency":"usd","product_ids":["sku-1","sku-2"],'
        '"campaign_id":"cmp-1"}',
        "context": '{"device_id":"dev-1","ip":"203.0.113.9","user_agent":"Mozilla/5.0"}',
        "event_time": "2026-11-01 00:00:00.123",
        "sent_at": "2026-11-01 00:00:00.400",
        "received_at": "2026-11-01 00:00:00.450",
    }
    assert tuple(result.row) == EVENTS_COLUMNS


def test_identify_maps_traits_to_columns() -> None:
    result = accepted(
        {
            "message_id": "m-2",
            "tenant_id": "acme",
            "type": "identify",
            "anonymous_id": "anon-1",
            "user_id": "u-1",
            "timestamp": 1_793_491_200_000,
            "traits": {"email": "ana@mail.example", "phone": "+15551234567", "name": "Ana Ng"},
        }
    )
    assert result.row == {
        **BASE_EVENT_ROW,
        "message_id": "m-2",
        "type": "identify",
        "event": "",
        "anonymous_id": "anon-1",
        "user_id": "u-1",
        "email": "ana@mail.example",
        "phone": "+15551234567",
        "traits": '{"email":"ana@mail.example","phone":"+15551234567","name":"Ana Ng"}',
        "event_time": "2026-11-01 00:00:00.000",
    }


def test_alias_maps_previous_id() -> None:
    result = accepted(
        {
            "message_id": "m-3",
            "tenant_id": "acme",
            "type": "alias",
            "previous_id": "anon-1",
            "user_id": "u-1",
            "timestamp": "2026-11-01T01:00:00+01:00",
        }
    )
    assert result.row == {
        **BASE_EVENT_ROW,
        "message_id": "m-3",
        "type": "alias",
        "event": "",
        "anonymous_id": "",
        "user_id": "u-1",
        "previous_id": "anon-1",
        "event_time": "2026-11-01 00:00:00.000",
    }


def test_page_maps_name_to_event_and_product_id_fallback() -> None:
    result = accepted(
        {
            "message_id": "m-4",
            "tenant_id": "acme",
            "type": "page",
            "name": "Product",
            "anonymous_id": "anon-1",
            "timestamp": "2026-11-01T00:00:00Z",
            "properties": {"url": "https://acme.example/p", "product_id": "sku-9"},
            "context": {"traits": {"email": "ctx@mail.example"}},
        }
    )
    assert result.row == {
        **BASE_EVENT_ROW,
        "message_id": "m-4",
        "type": "page",
        "event": "Product",
        "anonymous_id": "anon-1",
        "user_id": "",
        "email": "ctx@mail.example",
        "product_ids": ["sku-9"],
        "properties": '{"url":"https://acme.example/p","product_id":"sku-9"}',
        "context": '{"traits":{"email":"ctx@mail.example"}}',
        "event_time": "2026-11-01 00:00:00.000",
    }


def test_cost_maps_to_exact_cost_row() -> None:
    result = accepted(cost())
    assert result.table == "cost_records"
    assert result.row == {
        "tenant_id": "acme",
        "message_id": "c-1",
        "resource_id": "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc",
        "service": "AmazonEC2",
        "account_id": "123456789012",
        "region": "us-east-1",
        "charge_category": "Usage",
        "usage_start": "2026-11-01 00:00:00.000",
        "usage_end": "2026-11-01 01:00:00.000",
        "billed_cost": "0.0960",
        "effective_cost": "0.06912",
        "currency": "USD",
        "usage_quantity": "1",
        "usage_unit": "Hrs",
        "tags": {"team": "checkout", "env": "prod"},
        "source_partition": 3,
        "source_offset": 1234,
        "produced_at": "2026-11-01 00:00:00.500",
        "billing_account_id": "",
        "provider": "",
        "charge_class": "",
    }
    assert tuple(result.row) == COST_COLUMNS


def test_cost_defaults_for_credit_without_quantity_resource_or_tags() -> None:
    row = accepted(
        cost(
            charge_category="Credit",
            billed_cost="-25.00",
            effective_cost=-25,
            usage_quantity=...,
            usage_unit=...,
            resource_id=...,
            region=None,
            tags=...,
        )
    ).row
    assert row["billed_cost"] == "-25.00"
    assert row["effective_cost"] == "-25"
    assert (row["usage_quantity"], row["usage_unit"]) == ("0", "")
    assert (row["resource_id"], row["region"], row["tags"]) == ("", "", {})


def test_rows_serialise_for_json_each_row() -> None:
    for payload in (track(), cost()):
        row = accepted(payload).row
        assert orjson.loads(orjson.dumps(row)) == row


def test_produced_at_without_kafka_timestamp_is_epoch() -> None:
    result = validate(orjson.dumps(track()), SourceMeta("t", 0, 0, -1), LIMITS, NOW_MS)
    assert result.row["produced_at"] == "1970-01-01 00:00:00.000"


# --- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-01T10:15:00Z", "2026-11-01 10:15:00.000"),
        ("2026-11-01T10:15:00.123Z", "2026-11-01 10:15:00.123"),
        ("2026-11-01T10:15:00.123456789Z", "2026-11-01 10:15:00.123"),  # truncated, not rounded
        ("2026-11-01T10:15:00.9999Z", "2026-11-01 10:15:00.999"),
        ("2026-11-01T11:15:00.5+01:00", "2026-11-01 10:15:00.500"),
        ("2026-11-01T04:45:00-05:30", "2026-11-01 10:15:00.000"),
        ("2026-11-02T00:15:00+14:00", "2026-11-01 10:15:00.000"),
        ("2026-11-01 10:15:00+00:00", "2026-11-01 10:15:00.000"),
        ("20261101T101500Z", "2026-11-01 10:15:00.000"),
        ("2026-11-01T10:15Z", "2026-11-01 10:15:00.000"),
        ("2026-11-01T10:15:00,25Z", "2026-11-01 10:15:00.250"),
        ("2026-11-01T10:15:00+0000", "2026-11-01 10:15:00.000"),
        (1_793_528_100_123, "2026-11-01 10:15:00.123"),
        ("2000-01-01T00:00:00Z", "2000-01-01 00:00:00.000"),
    ],
)
def test_timestamp_formats_and_zones(value: Any, expected: str) -> None:
    row = validate(orjson.dumps(track(timestamp=value)), META, LIMITS, now_ms=1_793_600_000_000).row
    assert row["event_time"] == expected


def test_sent_at_and_cost_times_use_the_same_parser() -> None:
    row = accepted(track(sent_at="2026-10-31T20:00:00.001-04:00")).row
    assert row["sent_at"] == "2026-11-01 00:00:00.001"
    row = accepted(cost(usage_start=1_793_491_200_000, usage_end="2026-11-01T02:00:00+01:00")).row
    assert (row["usage_start"], row["usage_end"]) == (
        "2026-11-01 00:00:00.000",
        "2026-11-01 01:00:00.000",
    )


def test_late_events_are_accepted() -> None:
    assert accepted(track(timestamp="2001-01-01T00:00:00Z")).row["event_time"].startswith("2001")


def test_future_limit_is_inclusive_and_configurable() -> None:
    at_limit = NOW_MS + 3600 * 1000
    assert isinstance(run(track(timestamp=at_limit)), Accepted)
    assert run(track(timestamp=at_limit + 1)).reason_code == "future_time"
    limits = ValidationLimits(max_future_seconds=10)
    assert run(track(timestamp=NOW_MS + 11_000), limits=limits).reason_code == "future_time"


# --- every reason code, with its precise reason -------------------------------------------------

BIG = b'{"message_id":"m","tenant_id":"acme","type":"track","pad":"' + b"x" * 32768 + b'"}'

REJECTIONS: list[tuple[str, Any, str, str]] = [
    ("oversized", BIG, "oversized", "payload is 32829 bytes, over the 32768-byte limit"),
    (
        "latin1",
        b'{"message_id":"m","tenant_id":"acme","type":"identify","user_id":"Jos\xe9"}',
        "bad_encoding",
        "payload is not valid UTF-8: invalid continuation byte at byte offset 69",
    ),
    (
        "lone-ff",
        b'{"a":"\xff"}',
        "bad_encoding",
        "payload is not valid UTF-8: invalid start byte at byte offset 6",
    ),
    (
        "truncated",
        b'{"message_id":"m","tenant_id":"acme","type":"tr',
        "malformed_json",
        "payload is not valid JSON: unexpected end of data: line 1 column 48 (char 47)",
    ),
    (
        "empty",
        b"",
        "malformed_json",
        "payload is not valid JSON: Input is a zero-length, empty document: "
        "line 1 column 1 (char 0)",
    ),
    (
        "nan-literal",
        b'{"revenue":NaN}',
        "malformed_json",
        "payload is not valid JSON: unexpected character, expected a JSON value:"
        " line 1 column 12 (char 11)",
    ),
    ("array", b"[{}]", "not_an_object", "top-level JSON value must be an object, got array"),
    ("string", b'"hi"', "not_an_object", "top-level JSON value must be an object, got string"),
    ("null", b"null", "not_an_object", "top-level JSON value must be an object, got null"),
    (
        "no-message-id",
        track(message_id=...),
        "missing_field",
        "missing required field 'message_id'",
    ),
    ("null-tenant", track(tenant_id=None), "missing_field", "required field 'tenant_id' is null"),
    ("no-type", track(type=...), "missing_field", "missing required field 'type'"),
    ("no-timestamp", track(timestamp=...), "missing_field", "missing required field 'timestamp'"),
    ("no-event", track(event=...), "missing_field", "missing required field 'event'"),
    (
        "no-ids",
        track(user_id=..., anonymous_id=""),
        "missing_field",
        "missing required field 'user_id' or 'anonymous_id' (track needs one)",
    ),
    (
        "alias-no-previous",
        track(type="alias"),
        "missing_field",
        "missing required field 'previous_id'",
    ),
    (
        "alias-no-user",
        track(type="alias", previous_id="anon-1", user_id=...),
        "missing_field",
        "missing required field 'user_id'",
    ),
    (
        "cost-no-billed",
        cost(billed_cost=...),
        "missing_field",
        "missing required field 'billed_cost'",
    ),
    (
        "usage-no-quantity",
        cost(usage_quantity=...),
        "missing_field",
        "missing required field 'usage_quantity'",
    ),
    (
        "message-id-int",
        track(message_id=7),
        "wrong_type",
        "field 'message_id' must be a string, got integer",
    ),
    (
        "timestamp-bool",
        track(timestamp=True),
        "wrong_type",
        "field 'timestamp' must be an ISO-8601 string or integer epoch millis, got boolean",
    ),
    (
        "timestamp-float",
        track(timestamp=1793491200000.5),
        "wrong_type",
        "field 'timestamp' must be an ISO-8601 string or integer epoch millis, got number",
    ),
    (
        "properties-string",
        track(properties="{}"),
        "wrong_type",
        "field 'properties' must be an object, got string",
    ),
    (
        "email-number",
        track(traits={"email": 5}),
        "wrong_type",
        "field 'traits.email' must be a string, got integer",
    ),
    (
        "product-ids-mixed",
        track(properties={"product_ids": ["a", 7]}),
        "wrong_type",
        "field 'properties.product_ids[1]' must be a string, got integer",
    ),
    (
        "revenue-object",
        track(properties={"revenue": {"amount": 1}}),
        "wrong_type",
        "field 'properties.revenue' must be a decimal number, got object",
    ),
    (
        "billed-list",
        cost(billed_cost=[0.5]),
        "wrong_type",
        "field 'billed_cost' must be a decimal number, got array",
    ),
    (
        "tag-number",
        cost(tags={"team": 1}),
        "wrong_type",
        "field 'tags.team' must be a string, got integer",
    ),
    (
        "screen",
        track(type="screen"),
        "unknown_type",
        "unknown type 'screen' (expected one of: track, identify, alias, page, cost, focus)",
    ),
    (
        "case",
        track(type="Track"),
        "unknown_type",
        "unknown type 'Track' (expected one of: track, identify, alias, page, cost, focus)",
    ),
    (
        "words",
        track(timestamp="yesterday"),
        "bad_timestamp",
        "field 'timestamp' is not an ISO-8601 time: 'yesterday'",
    ),
    (
        "month-13",
        track(timestamp="2026-13-01T00:00:00Z"),
        "bad_timestamp",
        "field 'timestamp' is not an ISO-8601 time: '2026-13-01T00:00:00Z'",
    ),
    (
        "naive",
        track(timestamp="2026-11-01T10:00:00"),
        "bad_timestamp",
        "field 'timestamp' has no time zone (add 'Z' or an offset): '2026-11-01T10:00:00'",
    ),
    (
        "epoch-seconds",
        track(timestamp=1_793_491_200),
        "bad_timestamp",
        "field 'timestamp' is before 2000-01-01: 1793491200 (integer times are epoch milliseconds)",
    ),
    (
        "1999",
        track(timestamp="1999-12-31T23:59:59.999Z"),
        "bad_timestamp",
        "field 'timestamp' is before 2000-01-01: '1999-12-31T23:59:59.999Z'",
    ),
    (
        "2300",
        cost(usage_end="2300-01-01T00:00:00Z"),
        "bad_timestamp",
        "field 'usage_end' is after 2299-12-31: '2300-01-01T00:00:00Z'",
    ),
    (
        "sent-at-bad",
        track(sent_at="soon"),
        "bad_timestamp",
        "field 'sent_at' is not an ISO-8601 time: 'soon'",
    ),
    (
        "future",
        track(timestamp="2031-11-01T00:00:00Z"),
        "future_time",
        "event time 2031-11-01 00:00:00.000 is 157766340 s after now (2026-11-01 00:01:00.000),"
        " over the 3600 s limit",
    ),
    (
        "future-cost",
        cost(usage_start="2026-11-01T02:00:00Z", usage_end="2026-11-01T03:00:00Z"),
        "future_time",
        "event time 2026-11-01 02:00:00.000 is 7140 s after now (2026-11-01 00:01:00.000),"
        " over the 3600 s limit",
    ),
    ("empty-id", track(message_id=""), "invalid_value", "field 'message_id' must not be empty"),
    (
        "long-id",
        track(message_id="m" * 129),
        "invalid_value",
        "field 'message_id' must be at most 128 characters, got 129",
    ),
    (
        "tenant-space",
        track(tenant_id="acme corp"),
        "invalid_value",
        "field 'tenant_id' must be 1-64 characters of A-Z a-z 0-9 _ . -, got 'acme corp'",
    ),
    (
        "tenant-long",
        track(tenant_id="a" * 65),
        "invalid_value",
        f"field 'tenant_id' must be 1-64 characters of A-Z a-z 0-9 _ . -, got '{'a' * 65}'",
    ),
    ("empty-event", track(event=""), "invalid_value", "field 'event' must not be empty"),
    (
        "currency-2",
        track(properties={"currency": "US"}),
        "invalid_value",
        "field 'properties.currency' must be a 3-letter ISO-4217 code, got 'US'",
    ),
    (
        "currency-euro-sign",
        cost(currency="€UR"),
        "invalid_value",
        "field 'currency' must be a 3-letter ISO-4217 code, got '€UR'",
    ),
    (
        "revenue-text",
        track(properties={"revenue": "12 USD"}),
        "invalid_value",
        "field 'properties.revenue' is not a decimal number: '12 USD'",
    ),
    (
        "revenue-too-big",
        track(properties={"revenue": "1234567890123.5"}),
        "invalid_value",
        "field 'properties.revenue' has more than 12 integer digits: '1234567890123.5'",
    ),
    (
        "nan-cost",
        cost(billed_cost="NaN"),
        "invalid_value",
        "field 'billed_cost' must be a finite number, got 'NaN'",
    ),
    (
        "inf-cost",
        cost(effective_cost="-Infinity"),
        "invalid_value",
        "field 'effective_cost' must be a finite number, got '-Infinity'",
    ),
    (
        "underscore",
        cost(billed_cost="1_000"),
        "invalid_value",
        "field 'billed_cost' is not a decimal number: '1_000'",
    ),
    (
        "negative-usage",
        cost(billed_cost="-0.5"),
        "invalid_value",
        "field 'billed_cost' must not be negative for charge_category 'Usage', got '-0.5'"
        " (only Credit, Adjustment and Correction charges may be negative)",
    ),
    (
        "negative-quantity",
        cost(usage_quantity=-1),
        "invalid_value",
        "field 'usage_quantity' must not be negative, got '-1'",
    ),
    (
        "end-before-start",
        cost(usage_end="2026-10-31T23:00:00Z"),
        "invalid_value",
        "field 'usage_end' (2026-10-31 23:00:00.000) is before 'usage_start'"
        " (2026-11-01 00:00:00.000)",
    ),
    (
        "category",
        cost(charge_category="Refund"),
        "invalid_value",
        "field 'charge_category' must be one of Adjustment, Credit, Purchase, Tax, Usage,"
        " got 'Refund'",
    ),
    (
        "cost-overflow",
        cost(billed_cost="123456789012345678901234567"),
        "invalid_value",
        "field 'billed_cost' has more than 26 integer digits: '123456789012345678901234567'",
    ),
    ("empty-service", cost(service=""), "invalid_value", "field 'service' must not be empty"),
]


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
def test_rejection_reason(payload: Any, code: str, reason: str) -> None:
    result = rejected(payload)
    assert (result.reason_code, result.reason) == (code, reason)
    assert tuple(result.row) == DEAD_LETTER_COLUMNS
    assert (result.row["reason_code"], result.row["reason"]) == (code, reason)


def test_every_reason_code_is_exercised() -> None:
    codes = {case[2] for case in REJECTIONS}
    assert codes == set(REASON_CODES) - {"internal_error"}


def test_dead_letter_row_keeps_position_ids_and_utf8_payload() -> None:
    payload = orjson.dumps(track(timestamp="later"))
    result = run(payload)
    assert result.row == {
        "source_topic": "tidemark.events",
        "source_partition": 3,
        "source_offset": 1234,
        "produced_at": "2026-11-01 00:00:00.500",
        "tenant_id": "acme",
        "message_id": "m-1",
        "reason_code": "bad_timestamp",
        "reason": "field 'timestamp' is not an ISO-8601 time: 'later'",
        "raw": payload.decode(),
        "raw_encoding": "utf8",
        "record_id": record_id(payload, PRODUCED_MS),
    }


def test_dead_letter_of_invalid_utf8_is_base64() -> None:
    payload = b'{"message_id":"m","tenant_id":"acme","x":"\xff\xfe"}'
    row = run(payload).row
    assert (row["raw_encoding"], base64.b64decode(row["raw"])) == ("base64", payload)
    assert (row["tenant_id"], row["message_id"]) == ("", "")  # unparsed: unknown


def test_dead_letter_ids_are_best_effort() -> None:
    row = run(track(tenant_id="bad tenant", message_id="m-9")).row
    assert (row["tenant_id"], row["message_id"]) == ("bad tenant", "m-9")
    row = run(track(tenant_id=42)).row
    assert (row["tenant_id"], row["message_id"]) == ("", "m-1")


def test_oversized_is_checked_before_parsing() -> None:
    limits = ValidationLimits(max_event_bytes=10)
    result = run(b"\xff" * 11, limits=limits)
    assert (result.reason_code, result.row["raw_encoding"]) == ("oversized", "base64")
    assert run(b"[" * 11, limits=limits).reason_code == "oversized"


def test_first_failing_check_wins() -> None:
    both = track(message_id="", tenant_id="bad tenant", timestamp="never")
    assert run(both).reason == "field 'message_id' must not be empty"
    shape_and_time = track(timestamp="2031-01-01T00:00:00Z", properties="x")
    assert run(shape_and_time).reason_code == "wrong_type"


# --- decimals -----------------------------------------------------------------------------------


def test_decimal_strings_are_kept_digit_for_digit() -> None:
    row = accepted(
        cost(
            billed_cost="12345678901234567890123456.123456789012",
            effective_cost="0.000000000001",
            usage_quantity="19.90",
        )
    ).row
    assert row["billed_cost"] == "12345678901234567890123456.123456789012"
    assert row["effective_cost"] == "0.000000000001"
    assert row["usage_quantity"] == "19.90"


def test_json_number_literals_are_read_exactly_not_through_float() -> None:
    raw = (
        b'{"message_id":"c","tenant_id":"acme","type":"cost","service":"S","account_id":"1",'
        b'"usage_start":"2026-11-01T00:00:00Z","usage_end":"2026-11-01T01:00:00Z",'
        b'"currency":"USD","billed_cost":1234567890.123456789012,'
        b'"effective_cost":123456789012345678901234,"usage_quantity":1e-7,"usage_unit":"Hrs"}'
    )
    assert float("1234567890.123456789012") != Decimal("1234567890.123456789012")  # the trap
    row = run(raw).row
    assert row["billed_cost"] == "1234567890.123456789012"
    assert row["effective_cost"] == "123456789012345678901234"
    assert row["usage_quantity"] == "0.0000001"
    revenue = run(orjson.dumps(track()).replace(b"59.98", b"0.30000000000000004")).row
    assert revenue["revenue"] == "0.300000"  # rounded to the column's 6 places, from the literal


def test_digits_beyond_the_scale_round_half_even() -> None:
    cases = {
        "0.0000000000005": "0",
        "0.0000000000015": "0.000000000002",
        "0.393835616438359": "0.393835616438",
        "-0.0000000000025": "-0.000000000002",
        "1E+3": "1000",
        "-0.00": "0",
    }
    for given, stored in cases.items():
        assert (
            accepted(cost(charge_category="Credit", billed_cost=given)).row["billed_cost"] == stored
        ), given


def test_rounding_carry_into_a_27th_integer_digit_is_rejected() -> None:
    result = rejected(cost(billed_cost="99999999999999999999999999.9999999999999"))
    assert result.reason == (
        "field 'billed_cost' has more than 26 integer digits:"
        " '99999999999999999999999999.9999999999999'"
    )


def test_sums_of_stored_costs_are_exact() -> None:
    rows = [accepted(cost(message_id=f"c{i}", billed_cost=0.1)).row for i in range(10)]
    assert sum(Decimal(row["billed_cost"]) for row in rows) == Decimal(1)


# --- robustness ---------------------------------------------------------------------------------


def test_deeply_nested_properties_are_a_dead_letter_not_a_crash() -> None:
    nested = b"[" * 300 + b"]" * 300
    raw = orjson.dumps(track(properties={"x": 1})).replace(b'{"x":1}', b'{"x":' + nested + b"}")
    result = run(raw)
    assert result.reason_code == "invalid_value"
    assert result.reason.startswith("field 'properties' cannot be stored as JSON")


@pytest.mark.parametrize("raw", [None, "text", bytearray(b"{}"), memoryview(b"[]")])
def test_non_bytes_inputs_do_not_raise(raw: Any) -> None:
    assert isinstance(validate(raw, META, LIMITS, NOW_MS), Rejected)


def test_never_raises_on_mutated_and_random_payloads() -> None:
    rng = random.Random(20261101)
    seeds = [orjson.dumps(track()), orjson.dumps(cost()), orjson.dumps(track(type="identify"))]
    codes: set[str] = set()
    for i in range(4000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(1 + i % 4):
            position = rng.randrange(len(raw))
            action = rng.random()
            if action < 0.4:
                raw[position] = rng.randrange(256)
            elif action < 0.7:
                del raw[position : position + rng.randrange(1, 8)]
            else:
                raw[position:position] = rng.choice([b"null", b"[]", b"{}", b"-1e999", b'"', b"1"])
        result = validate(bytes(raw), META, LIMITS, NOW_MS)
        assert isinstance(result, Accepted | Rejected)
        if isinstance(result, Rejected):
            codes.add(result.reason_code)
            assert result.reason_code in REASON_CODES
            assert tuple(result.row) == DEAD_LETTER_COLUMNS
        orjson.dumps(result.row)  # every row must be serialisable
    assert "internal_error" not in codes


# --- throughput (printed, not asserted) ---------------------------------------------------------


def test_print_validate_throughput() -> None:
    payloads = [
        orjson.dumps(track()),
        orjson.dumps(track(event="Product Viewed", properties={"product_id": "sku-1"})),
        orjson.dumps(
            {
                "message_id": "p",
                "tenant_id": "acme",
                "type": "page",
                "name": "Home",
                "anonymous_id": "anon-1",
                "timestamp": "2026-11-01T00:00:00.123Z",
                "properties": {"url": "https://acme.example/", "path": "/"},
                "context": {"device_id": "d", "ip": "203.0.113.9", "user_agent": "Mozilla/5.0"},
            }
        ),
        orjson.dumps(cost()),
    ] * 5000
    started = time.process_time()
    for raw in payloads:
        validate(raw, META, LIMITS, NOW_MS)
    elapsed = time.process_time() - started
    print(f"\nvalidate(): {len(payloads) / elapsed:,.0f} events/s (CPU time, one core)")


# --- FOCUS rows (type "focus") ------------------------------------------------------------------

# One Azure row of the FinOps Foundation's FOCUS 1.0 sample, as exported: zone-less times,
# literal NULL cells, and a negative Usage cost and quantity (a re-rated usage charge).
AZURE_ROW = {
    "BilledCost": "-0.14900000000",
    "BillingAccountId": "12345678",
    "BillingCurrency": "USD",
    "ChargeCategory": "Usage",
    "ChargeClass": "NULL",
    "ChargePeriodStart": "2024-09-03 00:00:00",
    "ChargePeriodEnd": "2024-09-04 00:00:00",
    "ConsumedQuantity": "-1.000000000000000",
    "ConsumedUnit": "1 Hour",
    "EffectiveCost": "-0.14900000000",
    "ProviderName": "Microsoft",
    "RegionId": "eastus",
    "ResourceId": "NULL",
    "ServiceName": "Virtual Machines",
    "SubAccountId": "64e355d7-997c-491d-b0c1-8414dccfcf42",
    "Tags": "NULL",
}


def focus(row: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    record = {"type": "focus", "tenant_id": "acme", "focus": row or AZURE_ROW}
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not ...}


def test_focus_row_as_exported_is_accepted_under_focus_rules() -> None:
    result = accepted(focus())
    assert result.table == "cost_records"
    row = result.row
    assert tuple(row) == COST_COLUMNS
    assert (row["usage_start"], row["usage_end"]) == (
        "2024-09-03 00:00:00.000",  # zone-less FOCUS time read as UTC
        "2024-09-04 00:00:00.000",
    )
    assert (row["billed_cost"], row["effective_cost"]) == ("-0.14900000000", "-0.14900000000")
    assert (row["usage_quantity"], row["usage_unit"]) == ("-1.000000000000", "1 Hour")
    assert (row["resource_id"], row["tags"], row["charge_class"]) == ("", {}, "")  # NULL = null
    assert (row["provider"], row["billing_account_id"]) == ("Microsoft", "12345678")
    assert row["account_id"] == "64e355d7-997c-491d-b0c1-8414dccfcf42"
    assert result.message_id.startswith("focus-")  # derived from the row when not sent


def test_focus_message_id_is_the_row_hash_unless_sent() -> None:
    derived = accepted(focus()).message_id
    assert accepted(focus()).message_id == derived
    assert accepted(focus(tenant_id="globex")).message_id != derived
    assert accepted(focus(message_id="line-7")).message_id == "line-7"


def test_focus_json_numbers_are_read_exactly() -> None:
    raw = orjson.dumps(focus()).replace(b'"-0.14900000000"', b"-0.1490000000000000000001", 1)
    result = validate(raw, META, LIMITS, NOW_MS)
    assert isinstance(result, Accepted), result
    assert result.row["billed_cost"] == "-0.149000000000"  # 22 decimals, rounded exactly


def test_focus_times_with_offsets_and_correction_class() -> None:
    row = accepted(
        focus(
            {
                **AZURE_ROW,
                "ChargePeriodStart": "2024-09-03T02:00:00+02:00",
                "ChargePeriodEnd": "2024-09-04T00:00:00Z",
                "ChargeClass": "Correction",
            }
        )
    ).row
    assert (row["usage_start"], row["charge_class"]) == ("2024-09-03 00:00:00.000", "Correction")


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (focus({**AZURE_ROW, "BilledCost": "NaN"}), "invalid_value",
         "field 'BilledCost' must be a finite number, got 'NaN'"),
        (focus({**AZURE_ROW, "ServiceName": "NULL"}), "missing_field",
         "missing required field 'ServiceName'"),
        (focus({**AZURE_ROW, "ChargePeriodStart": "18/09/2024"}), "bad_timestamp",
         "field 'ChargePeriodStart' is not an ISO-8601 time: '18/09/2024'"),
        (focus({**AZURE_ROW, "Tags": "team=x"}), "wrong_type",
         "field 'Tags' must be an object, got string"),
        (focus({**AZURE_ROW, "ChargeClass": "Refund"}), "invalid_value",
         "field 'ChargeClass' must be empty or one of Correction, got 'Refund'"),
        (focus(focus=...), "missing_field", "missing required field 'focus'"),
        (focus(focus=[1]), "wrong_type",
         "field 'focus' must be an object of FOCUS columns, got array"),
        (focus(tenant_id=...), "missing_field", "missing required field 'tenant_id'"),
    ],
    ids=["nan", "null-service", "time", "tag", "class", "no-row", "row-array", "no-tenant"],
)  # fmt: skip
def test_focus_rejections_name_the_focus_column(payload: Any, code: str, reason: str) -> None:
    result = rejected(payload)
    assert (result.reason_code, result.reason) == (code, reason)
    assert result.row["tenant_id"] == payload.get("tenant_id", "")


def test_native_cost_may_be_negative_only_as_credit_adjustment_or_correction() -> None:
    assert accepted(cost(billed_cost="-0.5", charge_class="Correction")).row["charge_class"] == (
        "Correction"
    )
    assert rejected(cost(billed_cost="-0.5")).reason_code == "invalid_value"
    assert rejected(cost(charge_class="Refund")).reason_code == "invalid_value"
    row = accepted(cost(provider="AWS", billing_account_id="999")).row
    assert (row["provider"], row["billing_account_id"]) == ("AWS", "999")


# --- dead-letter identity -----------------------------------------------------------------------


def test_dead_letter_record_id_is_stable_for_a_replay_and_new_for_another_record() -> None:
    """Same record at the same position (a Flink replay): same key. Another record at a reused
    position (a broker restart starts offsets again at 0): another key."""
    bad = orjson.dumps(track(timestamp="later"))
    first = run(bad).row
    assert run(bad).row["record_id"] == first["record_id"]  # replay
    other_payload = validate(orjson.dumps(track(timestamp="soon")), META, LIMITS, NOW_MS).row
    later_copy = validate(bad, SourceMeta("tidemark.events", 3, 1234, PRODUCED_MS + 1), LIMITS,
                          NOW_MS).row  # fmt: skip
    keys = {(r["source_partition"], r["source_offset"]) for r in (first, other_payload, later_copy)}
    assert keys == {(3, 1234)}  # the old key could not tell them apart
    ids = {first["record_id"], other_payload["record_id"], later_copy["record_id"]}
    assert len(ids) == 3
    assert len(first["record_id"]) == 32
