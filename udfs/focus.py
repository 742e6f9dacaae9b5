"""Read FinOps FOCUS 1.x cost exports (CSV or Parquet) as tidemark cost-record dicts.

Why map to the raw contract instead of straight to ClickHouse rows: FOCUS rows then travel the
same road as every other cost record (Kafka, `udfs.validation`, dedup, dead letters), so there
is one set of rules and a bad export row becomes a dead letter with a reason, not a crashed
loader. This module therefore converts *shapes* (columns, Parquet types) and leaves judging
*values* to the validator: a cost cell reading "NaN" is passed on, and rejected there.

Exactness: CSV cells are read as text and passed through untouched, so a cost written with 18
decimals reaches ClickHouse with 18 decimals. Parquet decimals are formatted exactly; Parquet
doubles (already binary) are written as their shortest round-trip text.

Idempotent loads: message_id is a hash of the tenant and every column of the row, so loading
the same file twice produces the same ids and ClickHouse's ReplacingMergeTree keeps one copy.
FOCUS has no line-item id, so two byte-identical rows in one file also collapse into one.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from udfs.contract import COST_TYPE, MAX_TENANT_ID_CHARS, TENANT_ID_CHARS

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
_BATCH_ROWS = 10_000
_HEADER_PROBE_BYTES = 1 << 16


class FocusFormatError(ValueError):
    """The file is not a usable FOCUS export (unreadable, or a required column is missing)."""


# --- value conversion ---------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A cell as contract text; None for null and empty cells (the validator treats them as
    absent)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    return str(value)


def _number(value: Any) -> str | int | None:
    """A money or quantity cell, exact: text stays text, Decimal is formatted without exponent,
    a binary double becomes its shortest round-trip text."""
    if value is None or value == "":
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        if math.isfinite(value):
            return format(Decimal(repr(value)), "f")
        return repr(value)  # 'nan' / 'inf': the validator rejects them by name
    return str(value)


def _time(value: Any) -> str | None:
    """A ChargePeriod cell as ISO-8601. FOCUS times are UTC, so a zone-less Parquet timestamp is
    read as UTC; text is passed through for the validator to judge."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00Z"
    return str(value)


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
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        if not isinstance(parsed, dict):
            return value
        value = parsed
    elif isinstance(value, list):  # Parquet map<string, string> arrives as (key, value) pairs
        value = dict(value)
    if isinstance(value, dict):
        return {str(k): _tag_value(v) for k, v in value.items()}
    return value


def _canonical(value: Any) -> Any:
    """A cell in a stable JSON-able form, for the message_id hash."""
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float | Decimal):
        return _number(value)
    if isinstance(value, datetime | date):
        return _time(value)
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    return str(value)


def message_id_for(row: Mapping[str, Any], tenant_id: str) -> str:
    """Deterministic id of a FOCUS row: sha256 over the tenant and every (column, value)."""
    canonical = [tenant_id, sorted((name, _canonical(value)) for name, value in row.items())]
    digest = hashlib.sha256(orjson.dumps(canonical)).hexdigest()
    return f"focus-{digest[:40]}"


def focus_row_to_record(row: Mapping[str, Any], tenant_id: str) -> dict[str, Any]:
    """One FOCUS row (column name -> value) as a tidemark cost record (the raw JSON contract).

    Fields whose FOCUS cell is null or empty are left out, so the validator applies its
    defaults or reports the missing field by its contract name.
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
        "region": _text(row.get("RegionId")) or _text(row.get("RegionName")),
        "charge_category": _text(row.get("ChargeCategory")),
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
        "message_id": message_id_for(row, tenant_id),
        "tenant_id": tenant_id,
    }
    record.update((key, value) for key, value in candidates.items() if value is not None)
    return record


# --- files --------------------------------------------------------------------------------------


def check_columns(columns: Iterable[str], source: str) -> None:
    """Fail with the name of the first required FOCUS column the file lacks."""
    present = set(columns)
    for column in REQUIRED_COLUMNS:
        if column not in present:
            raise FocusFormatError(f"{source}: missing required FOCUS column '{column}'")
    if not any(quantity in present for quantity, _ in QUANTITY_PAIRS):
        raise FocusFormatError(
            f"{source}: missing FOCUS column 'ConsumedQuantity' (or 'PricingQuantity')"
        )


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    with open(path, "rb") as handle:
        return handle.read(4) == b"PAR1"


def _csv_header(path: Path) -> list[str]:
    """The CSV header names, read before pyarrow so every column can be forced to text:
    letting pyarrow infer types would turn cost strings into lossy doubles."""
    with pa.input_stream(str(path), compression="detect") as stream:
        head = b""
        while b"\n" not in head:
            chunk = stream.read(_HEADER_PROBE_BYTES)
            if not chunk:
                break
            head += chunk
    first_line = head.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
    return next(csv.reader([first_line]), [])


def _csv_batches(path: Path) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    names = _csv_header(path)
    convert = pa_csv.ConvertOptions(
        column_types={name: pa.string() for name in names},
        strings_can_be_null=True,
        null_values=[""],  # keep "NaN", "NULL" as text: the validator names them
    )
    reader = pa_csv.open_csv(str(path), convert_options=convert)
    return names, iter(reader)


def _parquet_batches(path: Path) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    parquet = pq.ParquetFile(str(path))
    return list(parquet.schema_arrow.names), parquet.iter_batches(batch_size=_BATCH_ROWS)


def iter_focus_records(path: str | os.PathLike[str], tenant_id: str) -> Iterator[dict[str, Any]]:
    """Yield one tidemark cost record per row of a FOCUS 1.x CSV (optionally compressed) or
    Parquet file, in file order. Raises FocusFormatError before the first row if the file
    lacks a required column, and ValueError for a tenant_id the contract would reject."""
    if not (0 < len(tenant_id) <= MAX_TENANT_ID_CHARS and TENANT_ID_CHARS.issuperset(tenant_id)):
        raise ValueError(f"tenant_id must be 1-64 characters of A-Z a-z 0-9 _ . -: {tenant_id!r}")
    source = Path(path)
    try:
        names, batches = (_parquet_batches if _is_parquet(source) else _csv_batches)(source)
    except (OSError, pa.ArrowException) as exc:
        raise FocusFormatError(f"{source}: cannot read as a FOCUS export: {exc}") from exc
    check_columns(names, str(source))
    for batch in batches:
        for row in batch.to_pylist():
            yield focus_row_to_record(row, tenant_id)
