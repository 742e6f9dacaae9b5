"""Map FinOps FOCUS 1.x rows to tidemark cost records: the one place that understands FOCUS.

A FOCUS row travels on Kafka as a `focus` record, `{"type": "focus", "tenant_id": ...,
"message_id": ... (optional), "focus": {<FOCUS column>: <cell>, ...}}`, and the ingest job maps
it here, inside the validator (`udfs.validation`). Why the job and not the producer: a FOCUS row
put on the topic by any producer (`tidemark produce --focus`, a billing-export lambda, a
connector) is then read by the same rules, and a bad cell becomes a dead letter with a reason,
not a crashed loader. Reading files (CSV, Parquet) is `udfs.focus_files`'s job; this module
converts *cells* and leaves judging *values* to the validator: "NaN" is passed on, and rejected.

What FOCUS exports look like in the wild, and the rules applied here:
- nulls: a cell that is JSON null, empty, or the literal text `NULL` / `null` (as database
  exports such as the FinOps Foundation's sample data write them) is a null;
- times: FOCUS requires ISO 8601 UTC with `Z` ('2024-09-01T00:00:00Z'), but exports also write
  '2024-09-01 00:00:00'. FOCUS times are UTC by definition, so a time without a zone is read as
  UTC; one with an offset is converted to UTC; an unparseable one is passed on and rejected;
- money and quantities: FOCUS allows any decimal value, so signs are not judged here (see the
  `focus` path of the validator); text is passed through untouched, so 18 decimals reach
  the validator as 18 decimals, and Parquet decimals / doubles are formatted exactly.

Idempotent loads: message_id is a hash of the tenant and every column of the row, so loading
the same file twice produces the same ids and ClickHouse's ReplacingMergeTree keeps one copy.
FOCUS has no line-item id, so two byte-identical rows in one file also collapse into one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson

from udfs.contract import COST_TYPE, FOCUS_TYPE

# Columns FOCUS 1.x makes mandatory that this mapping cannot do without.
REQUIRED_COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingCurrency",
    "ChargeCategory",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "EffectiveCost",
    "ServiceName",
)
# usage_quantity/usage_unit come from the consumed pair, else the pricing pair; one must exist.
QUANTITY_PAIRS = (("ConsumedQuantity", "ConsumedUnit"), ("PricingQuantity", "PricingUnit"))
# Cell texts that mean null: exports from SQL engines write nulls as the word.
NULL_TEXTS = frozenset({"", "NULL", "null"})
# The FOCUS column(s) each cost-record field comes from, so a dead letter names what the
# sender wrote.
SOURCE_COLUMNS = {
    "resource_id": "ResourceId",
    "service": "ServiceName",
    "account_id": "SubAccountId",
    "billing_account_id": "BillingAccountId",
    "provider": "ProviderName",
    "region": "RegionId",
    "charge_category": "ChargeCategory",
    "charge_class": "ChargeClass",
    "usage_start": "ChargePeriodStart",
    "usage_end": "ChargePeriodEnd",
    "billed_cost": "BilledCost",
    "effective_cost": "EffectiveCost",
    "currency": "BillingCurrency",
    "usage_quantity": "ConsumedQuantity",
    "usage_unit": "ConsumedUnit",
    "tags": "Tags",
}


class FocusFormatError(ValueError):
    """The file is not a usable FOCUS export (unreadable, or a required column is missing)."""


# --- cells --------------------------------------------------------------------------------------


def is_null(value: Any) -> bool:
    """Whether a cell is a FOCUS null: None, empty, or the literal text NULL / null."""
    return value is None or (value.__class__ is str and value in NULL_TEXTS)


def _text(value: Any) -> str | None:
    """A cell as contract text; None for nulls (the validator treats them as absent)."""
    if is_null(value):
        return None
    if isinstance(value, str):
        return value
    return str(value)


def _number(value: Any) -> str | int | None:
    """A money or quantity cell, exact: text stays text, Decimal is formatted without exponent,
    a binary double becomes its shortest round-trip text."""
    if is_null(value):
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return value
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return format(Decimal(repr(value)), "f")
        return repr(value)  # 'nan' / 'inf': the validator rejects them by name
    return str(value)


def utc_text(moment: datetime) -> str:
    """An aware or zone-less (= UTC, the FOCUS rule) datetime as ISO-8601 UTC with 'Z'."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(value: Any) -> str | None:
    """A ChargePeriod cell as ISO-8601 UTC. FOCUS times are UTC, so a zone-less time (text
    '2024-09-18 22:00:00' or a zone-less Parquet timestamp) is read as UTC. Unparseable text
    is passed through for the validator to reject with its reason."""
    if is_null(value):
        return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except (ValueError, OverflowError):
            return value
        return utc_text(moment) if moment.tzinfo is None else value
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00Z"
    return value  # a number or other JSON value: the validator judges it


def _tag_value(value: Any) -> str:
    """FOCUS tag values may be null (a key-only tag) or, in some exports, non-strings."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _tags(value: Any) -> Any:
    """The Tags cell as a string->string object: JSON text (CSV) or a map / struct (Parquet).

    Text that is not a JSON object is passed through unchanged, so the validator dead-letters
    the row with a reason instead of the loader guessing.
    """
    if is_null(value):
        return None
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        if not isinstance(parsed, dict):
            return value
        value = parsed
    elif isinstance(value, list) and all(
        isinstance(pair, list | tuple) and len(pair) == 2 for pair in value
    ):  # Parquet map<string, string> arrives as (key, value) pairs
        value = dict(value)
    if isinstance(value, dict):
        return {str(k): _tag_value(v) for k, v in value.items()}
    return value


def json_cell(value: Any) -> Any:
    """A cell in a stable JSON form (what a `focus` record carries, and what ids hash): text,
    integers, booleans, null, objects; decimals, doubles and times as exact text."""
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float | Decimal):
        return _number(value)
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        if value and all(isinstance(pair, tuple) and len(pair) == 2 for pair in value):
            return {str(k): json_cell(v) for k, v in value}  # a Parquet map
        return [json_cell(item) for item in value]
    if isinstance(value, dict):
        return {str(k): json_cell(v) for k, v in value.items()}
    return str(value)


def json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A FOCUS row (column -> cell of any reader's type) as a JSON-able object."""
    return {str(name): json_cell(value) for name, value in row.items()}


# --- rows ---------------------------------------------------------------------------------------


def message_id_for(row: Mapping[str, Any], tenant_id: str) -> str:
    """Deterministic id of a FOCUS row: sha256 over the tenant and every (column, value)."""
    canonical = [tenant_id, sorted((name, json_cell(value)) for name, value in row.items())]
    digest = hashlib.sha256(orjson.dumps(canonical)).hexdigest()
    return f"focus-{digest[:40]}"


def focus_record(row: Mapping[str, Any], tenant_id: str) -> dict[str, Any]:
    """The `focus` record a producer puts on Kafka for one FOCUS row."""
    cells = json_row(row)
    return {
        "type": FOCUS_TYPE,
        "tenant_id": tenant_id,
        "message_id": message_id_for(cells, tenant_id),
        "focus": cells,
    }


def focus_row_to_record(
    row: Mapping[str, Any], tenant_id: str, message_id: str | None = None
) -> dict[str, Any]:
    """One FOCUS row (column name -> value) as a tidemark cost record (the raw JSON contract).

    Fields whose FOCUS cell is null are left out, so the validator applies its defaults or
    reports the missing field. `message_id` defaults to the row's hash (message_id_for).
    """
    quantity = unit = None
    for quantity_column, unit_column in QUANTITY_PAIRS:
        quantity = _number(row.get(quantity_column))
        if quantity is not None:
            unit = _text(row.get(unit_column))
            break
    candidates = {
        "resource_id": _text(row.get("ResourceId")),
        "service": _text(row.get("ServiceName")),
        "account_id": _text(row.get("SubAccountId")) or _text(row.get("BillingAccountId")),
        "billing_account_id": _text(row.get("BillingAccountId")),
        "provider": _text(row.get("ProviderName")),
        "region": _text(row.get("RegionId")) or _text(row.get("RegionName")),
        "charge_category": _text(row.get("ChargeCategory")),
        "charge_class": _text(row.get("ChargeClass")),
        "usage_start": _time(row.get("ChargePeriodStart")),
        "usage_end": _time(row.get("ChargePeriodEnd")),
        "billed_cost": _number(row.get("BilledCost")),
        "effective_cost": _number(row.get("EffectiveCost")),
        "currency": _text(row.get("BillingCurrency")),
        "usage_quantity": quantity,
        "usage_unit": unit,
        "tags": _tags(row.get("Tags")),
    }
    record: dict[str, Any] = {
        "type": COST_TYPE,
        "message_id": message_id or message_id_for(row, tenant_id),
        "tenant_id": tenant_id,
    }
    record.update((key, value) for key, value in candidates.items() if value is not None)
    return record
