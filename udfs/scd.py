"""Type-2 (slowly changing) versioned tables and the file reading they share.

Why a module of its own: both the lookup dimensions (`udfs.dimensions`) and the cost
attribution rules (`udfs.attribution`) are "versions of a key, each valid from a time", loaded
from the same kinds of files and changed by the same changelog. Keeping the machinery here
lets `udfs.dimensions` (which checks rule changes while parsing the changelog) import
`udfs.attribution` at module level, with no import cycle and no function-level import: jobs
pickle `udfs` by value, and a function-level import would load whatever copy of the module a
long-lived worker interpreter already holds.

A lookup asks "which version was valid at time t": the one with the greatest valid_from <= t.
A version may be a tombstone (None): from then on the key is unknown again. Per key, the
versions are two parallel, pre-sorted lists, so a lookup is a dict probe plus one `bisect`
(C code, O(log versions)) and returns the stored value itself, without allocating.

`valid_from` is integer epoch milliseconds (in a file: a string of ASCII digits) or an ISO-8601
time with a zone, like event times. 0 (or any early time) means "since the beginning". Beware
epoch *seconds*: they are read as millis, i.e. a time in January 1970.

Files (CSV via pyarrow.csv, Parquet via pyarrow.parquet): every cell is read as text (Parquet
integers, decimals and zoned timestamps are converted; a zone-less timestamp is refused), an
empty cell or null is "", unknown columns are ignored. Errors name the file, the row (data rows
count from 1, so row N is line N+1 of a CSV) and the column.
"""

from __future__ import annotations

import csv
import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, TypeVar

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from udfs.contract import MAX_EVENT_TIME_MS

KEY_SEPARATOR = "\x1f"
_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_QUOTE_CHARS = 80


class FieldError(ValueError):
    """One bad field: which column, and why. Callers add where it was (file and row, or the
    changelog record) before it reaches a person."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(f"column '{column}': {reason}")
        self.column = column
        self.reason = reason


def quote_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


# --- times -------------------------------------------------------------------------------------


def parse_valid_from(value: Any) -> int:
    """valid_from as epoch millis: an int, a string of ASCII digits, or ISO-8601 with a zone.

    Raises ValueError with the reason (the caller names the field).
    """
    if value.__class__ is int:
        ms = value
    elif isinstance(value, str):
        if value.isascii() and value.isdigit():
            ms = int(value)
        else:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    "must be integer epoch millis or an ISO-8601 time with a zone,"
                    f" got {quote_value(value)}"
                ) from None
            if parsed.tzinfo is None:
                raise ValueError(f"has no time zone (add 'Z' or an offset): {quote_value(value)}")
            delta = parsed - _UTC_EPOCH
            ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    else:
        kind = "boolean" if isinstance(value, bool) else type(value).__name__
        raise ValueError(
            f"must be integer epoch millis or an ISO-8601 time with a zone, got {kind}"
        )
    if ms > MAX_EVENT_TIME_MS:
        raise ValueError(f"is after 2299-12-31: {quote_value(value)}")
    return ms


_time_ms_cache: dict[str, int] = {}


def row_time_ms(value: int | str) -> int:
    """A validated row's time column as epoch millis: the validator writes UTC text
    'YYYY-MM-DD hh:mm:ss.fff' (read as UTC), ISO-8601 with a zone is honoured, ints pass.

    Memoised (per second for the validator's text): a stream's times cluster, and cost
    records carry hourly usage_start values, so nearly every call is a hit.
    """
    if isinstance(value, int):
        return value
    if len(value) == 23 and value[19] == ".":  # the validator's text: memoise per second
        second = _time_ms_cache.get(value[:19])
        if second is None:
            second = row_time_ms(value[:19])
        return second + int(value[20:])
    ms = _time_ms_cache.get(value)
    if ms is None:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        delta = parsed - _UTC_EPOCH
        ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
        if len(_time_ms_cache) > 100_000:  # bounded: a stream of distinct times must not grow it
            _time_ms_cache.clear()
        _time_ms_cache[value] = ms
    return ms


# --- the versioned table -------------------------------------------------------------------------

V = TypeVar("V")


class DimensionTable(Generic[V]):
    """Versions per key, sorted by valid_from; `lookup` is a dict probe and a bisect.

    V is the attributes type: a dict of strings for the lookup dimensions, a compiled rule for
    udfs.attribution. None stands for a tombstone.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        # key -> (valid_from millis ascending, attributes or None in the same order)
        self._versions: dict[str, tuple[list[int], list[V | None]]] = {}

    def add(self, key: str, valid_from_ms: int, attributes: V | None) -> None:
        """Add a version; the same (key, valid_from) again replaces it (idempotent upserts)."""
        versions = self._versions.get(key)
        if versions is None:
            self._versions[key] = ([valid_from_ms], [attributes])
            return
        times, values = versions
        if times[-1] < valid_from_ms:  # the common case: versions arrive in time order
            times.append(valid_from_ms)
            values.append(attributes)
            return
        i = bisect_left(times, valid_from_ms)
        if times[i] == valid_from_ms:
            values[i] = attributes
        else:
            times.insert(i, valid_from_ms)
            values.insert(i, attributes)

    def lookup(self, key: str, at_ms: int) -> V | None:
        """The version valid at at_ms (greatest valid_from <= at_ms); None if there is none or
        it is a tombstone."""
        versions = self._versions.get(key)
        if versions is None:
            return None
        i = bisect_right(versions[0], at_ms)
        return versions[1][i - 1] if i else None

    def history(self, key: str) -> list[tuple[int, V | None]]:
        """Every version of a key, oldest first (for tests and debugging)."""
        versions = self._versions.get(key)
        return list(zip(*versions, strict=True)) if versions else []

    def items(self) -> Iterator[tuple[str, list[int], list[V | None]]]:
        """(key, valid_froms, attributes) for every key; the lists are the table's own."""
        for key, (times, values) in self._versions.items():
            yield key, times, values

    def __len__(self) -> int:
        """The number of keys (not versions)."""
        return len(self._versions)

    def __contains__(self, key: object) -> bool:
        return key in self._versions


def join_key(values: Iterable[str]) -> str:
    """The table key of a multi-field key, e.g. ("acme", "sku-1") -> "acme\\x1fsku-1"."""
    return KEY_SEPARATOR.join(values)


# --- keys and files ----------------------------------------------------------------------------


def key_problem(value: str) -> str | None:
    """Why a key field value is unusable, or None."""
    if not value:
        return "must not be empty"
    if KEY_SEPARATOR in value:
        return "must not contain the \\x1f key separator"
    return None


def _cell_text(value: Any) -> str:
    """A Parquet cell as the text a CSV would have held: exact for integers and decimals,
    shortest round-trip text for doubles, epoch millis for zoned timestamps."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f") if math.isfinite(value) else repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a timestamp without a time zone (write UTC with tz='UTC')")
        delta = value - _UTC_EPOCH
        return str((delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000)
    if isinstance(value, date):
        raise ValueError("a date without a time and zone")
    raise ValueError(f"unsupported type {type(value).__name__}")


def _csv_header(path: Path) -> list[str]:
    """The header names, read first so pyarrow can be told every column is text (inference
    would turn "0100" into 100 and prices into doubles)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return next(csv.reader(handle), [])


def read_table_rows(
    path: str | Path, required: Iterable[str]
) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number from 1, {column: text}) for every row of a CSV or Parquet file.

    Checks the header first: a missing required column raises ValueError naming the file and
    the column. Empty cells (and Parquet nulls) are "".
    """
    source = Path(path)
    parquet = source.suffix.lower() == ".parquet"
    try:
        if parquet:
            table = pq.read_table(str(source))
            names = list(table.column_names)
        else:
            names = _csv_header(source)
            if not names:
                raise ValueError(f"{source}: empty file (no header row)")
            table = pa_csv.read_csv(
                str(source),
                convert_options=pa_csv.ConvertOptions(
                    column_types={name: pa.string() for name in names},
                    strings_can_be_null=False,
                ),
            )
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise ValueError(f"{source}: cannot read: {exc}") from exc
    for column in required:
        if column not in names:
            raise ValueError(f"{source}: missing required column '{column}'")
    for number, row in enumerate(table.to_pylist(), start=1):
        if parquet:
            cells: dict[str, str] = {}
            for column, value in row.items():
                try:
                    cells[column] = _cell_text(value)
                except ValueError as exc:
                    raise ValueError(f"{source} row {number} column '{column}': {exc}") from None
            yield number, cells
        else:
            yield number, row


_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"", "false", "0"})


def row_deleted(cells: Mapping[str, str]) -> bool:
    """The optional `deleted` column of a file row: true/1 is a tombstone, false/0/empty (or no
    such column) a normal version; case-insensitive, as spreadsheets write TRUE."""
    value = cells.get("deleted", "")
    flag = value.lower()
    if flag in _FALSE:
        return False
    if flag in _TRUE:
        return True
    raise FieldError("deleted", f"must be true, false, 1, 0 or empty, got {quote_value(value)}")


def row_valid_from(cells: Mapping[str, str]) -> int:
    """The valid_from cell of a file row, as epoch millis."""
    try:
        return parse_valid_from(cells.get("valid_from", ""))
    except ValueError as exc:
        raise FieldError("valid_from", str(exc)) from None


def row_key(cells: Mapping[str, str], key_fields: Iterable[str]) -> str:
    """The joined key of a file row; empty or separator-bearing fields are FieldErrors."""
    parts = []
    for name in key_fields:
        value = cells.get(name, "")
        problem = key_problem(value)
        if problem:
            raise FieldError(name, problem)
        parts.append(value)
    return join_key(parts)
