"""Read FinOps FOCUS 1.x exports (CSV, optionally compressed, or Parquet) row by row.

Why a module of its own: reading files needs pyarrow, which the ingest job's workers must not
import for every record; the job only maps rows (`udfs.focus`). The producer
(`tidemark produce --focus`) reads files here and puts each row on Kafka as a `focus` record.

Exactness: CSV cells are read as text (pyarrow would otherwise infer lossy doubles), so a cost
written with 18 decimals reaches the job with 18 decimals; Parquet decimals, doubles and
timestamps are turned into exact text by `udfs.focus.json_row`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from udfs.contract import MAX_TENANT_ID_CHARS, TENANT_ID_CHARS
from udfs.focus import QUANTITY_PAIRS, REQUIRED_COLUMNS, FocusFormatError, focus_row_to_record

_BATCH_ROWS = 10_000
_HEADER_PROBE_BYTES = 1 << 16


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


def check_tenant(tenant_id: str) -> None:
    """The contract's tenant rule, checked before a file is read rather than once per row."""
    if not (0 < len(tenant_id) <= MAX_TENANT_ID_CHARS and TENANT_ID_CHARS.issuperset(tenant_id)):
        raise ValueError(f"tenant_id must be 1-64 characters of A-Z a-z 0-9 _ . -: {tenant_id!r}")


def is_parquet(path: Path) -> bool:
    """By suffix, else by the Parquet magic bytes."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    with open(path, "rb") as handle:
        return handle.read(4) == b"PAR1"


def _csv_header(path: Path) -> list[str]:
    """The CSV header names, read before pyarrow so every column can be forced to text."""
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
        null_values=[""],  # "NULL" stays text: udfs.focus reads it as null, for every producer
    )
    reader = pa_csv.open_csv(str(path), convert_options=convert)
    return names, iter(reader)


def _parquet_batches(path: Path) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    parquet = pq.ParquetFile(str(path))
    return list(parquet.schema_arrow.names), parquet.iter_batches(batch_size=_BATCH_ROWS)


def open_focus(path: str | os.PathLike[str]) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """Column names and record batches of a FOCUS file, after checking its columns."""
    source = Path(path)
    try:
        names, batches = (_parquet_batches if is_parquet(source) else _csv_batches)(source)
    except (OSError, pa.ArrowException) as exc:
        raise FocusFormatError(f"{source}: cannot read as a FOCUS export: {exc}") from exc
    check_columns(names, str(source))
    return names, batches


def iter_focus_rows(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield each row of a FOCUS CSV or Parquet file (column -> cell), in file order. Raises
    FocusFormatError before the first row if the file lacks a required column."""
    _, batches = open_focus(path)
    try:
        for batch in batches:
            yield from batch.to_pylist()
    except pa.ArrowException as exc:  # a malformed line halfway through the file
        raise FocusFormatError(f"{path}: cannot read as a FOCUS export: {exc}") from exc


def count_rows(path: str | os.PathLike[str]) -> int | None:
    """The file's row count, for a progress bar: Parquet metadata, or one quick pass over the
    CSV's first column; None when the file cannot be read (the real read reports why)."""
    source = Path(path)
    try:
        if is_parquet(source):
            return pq.ParquetFile(str(source)).metadata.num_rows
        names = _csv_header(source)
        if not names:
            return None
        convert = pa_csv.ConvertOptions(
            include_columns=names[:1], column_types={names[0]: pa.string()}
        )
        reader = pa_csv.open_csv(str(source), convert_options=convert)
        return sum(batch.num_rows for batch in reader)
    except (OSError, pa.ArrowException):
        return None


def iter_focus_records(path: str | os.PathLike[str], tenant_id: str) -> Iterator[dict[str, Any]]:
    """Each row of a FOCUS file mapped to a tidemark cost record (what the job stores)."""
    check_tenant(tenant_id)
    for row in iter_focus_rows(path):
        yield focus_row_to_record(row, tenant_id)
