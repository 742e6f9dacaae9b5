"""The raw event contract: what a producer may send, as data the validator and the docs share.

Why a module of constants and no logic: the contract is read by three parties that must never
drift apart. The validator (`udfs.validation`) enforces it, the generator (`tidemark.gen`)
breaks it on purpose and records which rule it broke, and `schemas/EVENTS.md` explains it to
people. Keeping the names, limits and reason codes here means a rename is one edit, and the
tests can check the ClickHouse DDL against the column lists below.

The human-readable specification is `schemas/EVENTS.md`; this module is its machine half.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

# --- record types -------------------------------------------------------------------------------

CUSTOMER_TYPES: Final = ("track", "identify", "alias", "page")
COST_TYPE: Final = "cost"
# A FinOps FOCUS 1.x row as exported ({"type": "focus", "tenant_id", "focus": {...}}); the job
# maps it to a cost record (udfs/focus.py) under FOCUS's rules, and stores it in cost_records.
FOCUS_TYPE: Final = "focus"
EVENT_TYPES: Final = (*CUSTOMER_TYPES, COST_TYPE, FOCUS_TYPE)

# Customer event types whose sender must be identified by user_id or anonymous_id.
IDENTITY_REQUIRED_TYPES: Final = frozenset({"track", "page", "identify"})

# --- destination tables -------------------------------------------------------------------------

EVENTS_TABLE: Final = "events"
COST_TABLE: Final = "cost_records"
DEAD_LETTER_TABLE: Final = "dead_letters"

# Exactly the columns a row must carry, in DDL order. The server-side defaults (ingested_at,
# dead_at) are deliberately absent: they record when ClickHouse received the row.
EVENTS_COLUMNS: Final = (
    "tenant_id",
    "message_id",
    "type",
    "event",
    "anonymous_id",
    "user_id",
    "previous_id",
    "email",
    "phone",
    "device_id",
    "campaign_id",
    "revenue",
    "currency",
    "product_ids",
    "traits",
    "properties",
    "context",
    "event_time",
    "sent_at",
    "received_at",
    "source_partition",
    "source_offset",
    "produced_at",
)
COST_COLUMNS: Final = (
    "tenant_id",
    "message_id",
    "resource_id",
    "service",
    "account_id",
    "region",
    "charge_category",
    "usage_start",
    "usage_end",
    "billed_cost",
    "effective_cost",
    "currency",
    "usage_quantity",
    "usage_unit",
    "tags",
    "source_partition",
    "source_offset",
    "produced_at",
    # migration 007: the FOCUS columns a cost report needs beside the charge itself
    "billing_account_id",
    "provider",
    "charge_class",
)
DEAD_LETTER_COLUMNS: Final = (
    "source_topic",
    "source_partition",
    "source_offset",
    "produced_at",
    "tenant_id",
    "message_id",
    "reason_code",
    "reason",
    "raw",
    "raw_encoding",
    # migration 008: a hash of the Kafka timestamp and payload, part of the row's key, so a
    # replay collapses onto the same row but a different record that reuses a position (after
    # a broker restart or a topic re-creation) does not overwrite an earlier dead letter
    "record_id",
)
TABLE_COLUMNS: Final = {
    EVENTS_TABLE: EVENTS_COLUMNS,
    COST_TABLE: COST_COLUMNS,
    DEAD_LETTER_TABLE: DEAD_LETTER_COLUMNS,
}

# --- identifiers --------------------------------------------------------------------------------

MAX_MESSAGE_ID_CHARS: Final = 128
MAX_TENANT_ID_CHARS: Final = 64
# tenant_id is [A-Za-z0-9_.-]{1,64}: it ends up in Kafka keys, file names and metric labels.
TENANT_ID_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
)

# --- time ---------------------------------------------------------------------------------------

# Anything earlier is almost always epoch *seconds* sent where millis were expected (that lands
# in January 1970) or a zeroed clock; rejecting it keeps garbage out of monthly partitions.
MIN_EVENT_TIME_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
# The end of ClickHouse's DateTime64 range; a later value would be silently clamped on insert.
MAX_EVENT_TIME_MS: Final = 10_413_791_999_999  # 2299-12-31T23:59:59.999Z

# --- money --------------------------------------------------------------------------------------

# (precision, scale) of the ClickHouse Decimal columns. Digits beyond the scale are rounded
# half-to-even by the validator (1e-12 of a currency unit for costs; FOCUS exports from some
# providers carry 15-18 decimals), every other digit is kept exactly as sent, and a value with
# more integer digits than the column holds is rejected rather than overflowing.
REVENUE_DECIMAL: Final = (18, 6)
COST_DECIMAL: Final = (38, 12)

# FOCUS 1.x ChargeCategory values. In tidemark's own cost records only credits, adjustments and
# corrections may be negative (a refund or a correction): there a negative Usage cost is a
# broken producer. FOCUS rows (type `focus`) follow FOCUS, where BilledCost, EffectiveCost and
# the quantities are "any valid decimal value" (providers such as Azure export negative Usage
# rows when they re-rate usage), so no sign is judged there.
CHARGE_CATEGORIES: Final = frozenset({"Usage", "Purchase", "Tax", "Credit", "Adjustment"})
NEGATIVE_COST_CATEGORIES: Final = frozenset({"Credit", "Adjustment"})
# FOCUS 1.x ChargeClass: null, or "Correction" for a correction to an invoiced billing period.
CORRECTION: Final = "Correction"
CHARGE_CLASSES: Final = frozenset({CORRECTION})
DEFAULT_CHARGE_CATEGORY: Final = "Usage"
# Only usage has a meaningful quantity; purchases, taxes and credits often carry none.
QUANTITY_REQUIRED_CATEGORIES: Final = frozenset({"Usage"})
ZERO: Final = Decimal(0)

# --- dead-letter reason codes -------------------------------------------------------------------

# Stable identifiers: dashboards and alerts group on them, so never rename one. The order is the
# order of the checks; the first failing check decides the code.
OVERSIZED: Final = "oversized"
BAD_ENCODING: Final = "bad_encoding"
MALFORMED_JSON: Final = "malformed_json"
NOT_AN_OBJECT: Final = "not_an_object"
MISSING_FIELD: Final = "missing_field"
WRONG_TYPE: Final = "wrong_type"
UNKNOWN_TYPE: Final = "unknown_type"
BAD_TIMESTAMP: Final = "bad_timestamp"
FUTURE_TIME: Final = "future_time"
INVALID_VALUE: Final = "invalid_value"
# Not a property of the input: a validator bug caught by the never-raise guard. Must stay at 0.
INTERNAL_ERROR: Final = "internal_error"

REASON_CODES: Final = {
    OVERSIZED: "payload larger than ingest.max_event_bytes (checked before parsing)",
    BAD_ENCODING: "payload is not valid UTF-8",
    MALFORMED_JSON: "payload is not one valid JSON document",
    NOT_AN_OBJECT: "top-level JSON value is not an object",
    MISSING_FIELD: "a required field is absent or null",
    WRONG_TYPE: "a field has the wrong JSON type",
    UNKNOWN_TYPE: "the 'type' field is not one of the known record types",
    BAD_TIMESTAMP: "a time field is unparseable, has no zone, or is outside 2000-01-01..2299",
    FUTURE_TIME: "the event time is more than ingest.max_future_seconds after now",
    INVALID_VALUE: "a field has the right type but a value outside the contract",
    INTERNAL_ERROR: "the validator failed unexpectedly (a bug; the payload is kept)",
}

# How dead_letters.raw is encoded.
RAW_UTF8: Final = "utf8"
RAW_BASE64: Final = "base64"
