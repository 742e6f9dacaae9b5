"""The lookup dimensions (products, accounts, campaigns) and the dimension changelog.

Why type 2 and not "latest value wins": an event must be described by the product, campaign
and account *as they were when it happened*. A price change at 10:00 must not rewrite the
price of a 09:59 order, and a replay of yesterday must give yesterday's answers. So every
version of a row is kept with the time it became valid (`valid_from`) and a lookup returns the
version valid at the event time; a version may be a tombstone. The machinery (tables, times,
file reading) is `udfs.scd`; this module defines the dimensions and the changelog.

  dimension   key (joined with "\x1f")   attributes
  products    tenant_id, sku              name, category, price
  accounts    tenant_id                   plan, region
  campaigns   tenant_id, campaign_id      name, channel

Sources of versions, both idempotent so a replay is harmless (the same key and valid_from
again replaces that version instead of adding a second one):
  * files: `Dimensions.load(directory)` reads `<dimension>.csv` or `<dimension>.parquet` with
    the key, attribute and `valid_from` columns, and an optional `deleted` column (true/1 =
    tombstone; false/0/empty = a normal version). Errors name the file, row and column.
  * a changelog topic, one JSON object per record:
      {"dimension": "products", "op": "upsert" | "delete",
       "key": {"tenant_id": "acme", "sku": "sku-1"},
       "valid_from": 1764000000000 | "2026-11-22T00:00:00Z",
       "attributes": {"name": ..., "category": ..., "price": ...}}   (upserts only)
    `parse_change` raises ValueError with a precise reason, for the job to dead-letter, and
    `Dimensions.apply` adds the version. Attribute values are strings (integers and JSON
    numbers are accepted as their text); unknown attributes are ignored, missing ones are not.

The changelog also carries the cost attribution rules (dimension `attribution_rules`, key
`rule_id`, see `udfs.attribution`): one topic, one ordering, one dead-letter path. A rule
change is compiled while parsing, so a bad rule is a dead letter, never an error in the job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from udfs.attribution import (
    ATTRIBUTION_RULES,
    RULE_OPTIONAL,
    RULE_REQUIRED,
    compile_rule,
)
from udfs.scd import (
    KEY_SEPARATOR,
    DimensionTable,
    FieldError,
    join_key,
    key_problem,
    parse_valid_from,
    quote_value,
    read_table_rows,
    row_deleted,
    row_key,
    row_valid_from,
)

__all__ = [
    "CHANGELOG_SPECS",
    "DELETE",
    "DIMENSION_SPECS",
    "KEY_SEPARATOR",
    "UPSERT",
    "DimensionChange",
    "DimensionSpec",
    "DimensionTable",
    "Dimensions",
    "FieldError",
    "change_from_object",
    "parse_change",
    "parse_valid_from",
]

UPSERT = "upsert"
DELETE = "delete"
OPS = (UPSERT, DELETE)


@dataclass(frozen=True)
class DimensionSpec:
    """One dimension's contract: key fields (joined in this order) and attribute columns.

    `optional` attributes may be left out of a change (they read as ""); `required` ones may not.
    """

    name: str
    key_fields: tuple[str, ...]
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.required + self.optional


DIMENSION_SPECS: dict[str, DimensionSpec] = {
    "products": DimensionSpec("products", ("tenant_id", "sku"), ("name", "category", "price")),
    "accounts": DimensionSpec("accounts", ("tenant_id",), ("plan", "region")),
    "campaigns": DimensionSpec("campaigns", ("tenant_id", "campaign_id"), ("name", "channel")),
}
# Everything the changelog may carry: the lookup dimensions plus the attribution rules.
CHANGELOG_SPECS: dict[str, DimensionSpec] = {
    **DIMENSION_SPECS,
    ATTRIBUTION_RULES: DimensionSpec(ATTRIBUTION_RULES, ("rule_id",), RULE_REQUIRED, RULE_OPTIONAL),
}

# --- changelog ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DimensionChange:
    """One changelog record: a version of one key of one dimension (or a deletion).

    `key` holds exactly the dimension's key fields; `attributes` is None for a delete and
    otherwise holds every attribute of the spec (optional ones default to "").
    """

    dimension: str
    op: str
    key: dict[str, str]
    valid_from_ms: int
    attributes: dict[str, str] | None = None

    @property
    def key_string(self) -> str:
        """The table key: the key fields in spec order, joined with KEY_SEPARATOR."""
        spec = CHANGELOG_SPECS[self.dimension]
        return join_key(self.key[name] for name in spec.key_fields)

    def to_json(self) -> bytes:
        """The changelog record as compact JSON bytes (a Kafka value); valid_from as epoch
        millis. parse_change(change.to_json()) == change."""
        doc: dict[str, Any] = {
            "dimension": self.dimension,
            "op": self.op,
            "key": self.key,
            "valid_from": self.valid_from_ms,
        }
        if self.attributes is not None:
            doc["attributes"] = self.attributes
        return orjson.dumps(doc)

    @classmethod
    def upsert(
        cls,
        dimension: str,
        key: Mapping[str, str],
        valid_from: int | str,
        attributes: Mapping[str, Any],
    ) -> DimensionChange:
        """A checked upsert (the same checks as parse_change)."""
        return change_from_object(
            {
                "dimension": dimension,
                "op": UPSERT,
                "key": dict(key),
                "valid_from": valid_from,
                "attributes": dict(attributes),
            }
        )

    @classmethod
    def delete(
        cls, dimension: str, key: Mapping[str, str], valid_from: int | str
    ) -> DimensionChange:
        """A checked tombstone: the key is unknown from valid_from on."""
        return change_from_object(
            {"dimension": dimension, "op": DELETE, "key": dict(key), "valid_from": valid_from}
        )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _attribute_text(name: str, value: Any) -> str:
    """A changelog attribute as text: strings as they are, integers in decimal, JSON numbers
    as their shortest round-trip text (what the sender wrote, for up to 15 digits)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        raise ValueError(f"field 'attributes.{name}' must be a string, got {_json_type(value)}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return format(Decimal(repr(value)), "f")
    raise ValueError(f"field 'attributes.{name}' must be a string, got {_json_type(value)}")


def change_from_object(doc: Any) -> DimensionChange:
    """A parsed changelog object as a DimensionChange; ValueError with the reason otherwise."""
    if not isinstance(doc, dict):
        raise ValueError(f"changelog record must be a JSON object, got {_json_type(doc)}")
    dimension = doc.get("dimension")
    if dimension is None:
        raise ValueError("missing required field 'dimension'")
    if not isinstance(dimension, str):
        raise ValueError(f"field 'dimension' must be a string, got {_json_type(dimension)}")
    spec = CHANGELOG_SPECS.get(dimension)
    if spec is None:
        raise ValueError(
            f"unknown dimension {quote_value(dimension)}"
            f" (expected one of: {', '.join(CHANGELOG_SPECS)})"
        )
    op = doc.get("op")
    if op is None:
        raise ValueError("missing required field 'op'")
    if op not in OPS:
        raise ValueError(f"field 'op' must be 'upsert' or 'delete', got {quote_value(op)}")

    key_doc = doc.get("key")
    if key_doc is None:
        raise ValueError("missing required field 'key'")
    if not isinstance(key_doc, dict):
        raise ValueError(f"field 'key' must be an object, got {_json_type(key_doc)}")
    key: dict[str, str] = {}
    for name in spec.key_fields:
        value = key_doc.get(name)
        if value is None:
            raise ValueError(
                f"missing key field 'key.{name}' ({dimension} is keyed by"
                f" {', '.join(spec.key_fields)})"
            )
        if not isinstance(value, str):
            raise ValueError(f"field 'key.{name}' must be a string, got {_json_type(value)}")
        problem = key_problem(value)
        if problem:
            raise ValueError(f"field 'key.{name}' {problem}")
        key[name] = value
    for name in key_doc:
        if name not in key:
            raise ValueError(
                f"unexpected key field 'key.{name}' ({dimension} is keyed by"
                f" {', '.join(spec.key_fields)})"
            )

    if "valid_from" not in doc or doc["valid_from"] is None:
        raise ValueError("missing required field 'valid_from'")
    try:
        valid_from_ms = parse_valid_from(doc["valid_from"])
    except ValueError as exc:
        raise ValueError(f"field 'valid_from' {exc}") from None

    attributes: dict[str, str] | None = None
    if op == UPSERT:
        attributes_doc = doc.get("attributes")
        if attributes_doc is None:
            raise ValueError("missing required field 'attributes' (an upsert needs them)")
        if not isinstance(attributes_doc, dict):
            raise ValueError(
                f"field 'attributes' must be an object, got {_json_type(attributes_doc)}"
            )
        attributes = {}
        for name in spec.required:
            value = attributes_doc.get(name)
            if value is None:
                raise ValueError(f"missing required field 'attributes.{name}'")
            attributes[name] = _attribute_text(name, value)
        for name in spec.optional:
            value = attributes_doc.get(name)
            attributes[name] = "" if value is None else _attribute_text(name, value)
        # Unknown attributes are ignored, as unknown event fields are: a producer may add one
        # before tidemark knows it.
        if dimension == ATTRIBUTION_RULES:  # compiled now: a bad rule is a dead letter
            try:
                compile_rule(key["rule_id"], attributes)
            except FieldError as exc:
                raise ValueError(f"field 'attributes.{exc.column}' {exc.reason}") from None
    return DimensionChange(dimension, op, key, valid_from_ms, attributes)


def parse_change(value: bytes | str) -> DimensionChange:
    """One changelog record (a Kafka value) as a DimensionChange.

    Raises ValueError with a precise reason (not JSON, unknown dimension, bad op, missing key
    field, bad valid_from, missing attribute, a rule that does not compile, ...).
    """
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"changelog record is not valid JSON: {exc}") from None
    return change_from_object(doc)


# --- the dimensions -----------------------------------------------------------------------------


class Dimensions:
    """The lookup dimensions (products, accounts, campaigns), each a DimensionTable."""

    def __init__(self) -> None:
        self.tables: dict[str, DimensionTable[dict[str, str]]] = {
            name: DimensionTable(name) for name in DIMENSION_SPECS
        }
        # Direct attributes for the per-event path (one attribute load instead of a dict probe).
        self.products = self.tables["products"]
        self.accounts = self.tables["accounts"]
        self.campaigns = self.tables["campaigns"]

    @classmethod
    def load(cls, directory: str | Path) -> Dimensions:
        """Read every `<dimension>.csv` or `<dimension>.parquet` in directory (a dimension
        without a file stays empty, so every lookup in it is "unknown").

        Raises ValueError naming the file, row and column of the first bad cell, or when a
        dimension has both a CSV and a Parquet file (which one is the truth would be a guess).
        """
        dims = cls()
        folder = Path(directory)
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a directory")
        for name in DIMENSION_SPECS:
            paths = [folder / f"{name}.{ext}" for ext in ("csv", "parquet")]
            present = [path for path in paths if path.is_file()]
            if len(present) > 1:
                raise ValueError(f"{folder}: both {name}.csv and {name}.parquet exist; keep one")
            if present:
                dims.load_file(name, present[0])
        return dims

    def load_file(self, dimension: str, path: str | Path) -> int:
        """Add every row of one file to a dimension; returns the number of rows read."""
        spec = DIMENSION_SPECS.get(dimension)
        if spec is None:
            raise ValueError(
                f"unknown dimension {quote_value(dimension)}"
                f" (expected one of: {', '.join(DIMENSION_SPECS)})"
            )
        table = self.tables[dimension]
        count = 0
        for number, cells in read_table_rows(
            path, (*spec.key_fields, *spec.attributes, "valid_from")
        ):
            try:
                key = row_key(cells, spec.key_fields)
                valid_from_ms = row_valid_from(cells)
                attributes = (
                    None if row_deleted(cells) else {name: cells[name] for name in spec.attributes}
                )
            except FieldError as exc:
                raise ValueError(
                    f"{path} row {number} column '{exc.column}': {exc.reason}"
                ) from None
            table.add(key, valid_from_ms, attributes)
            count += 1
        return count

    def apply(self, change: DimensionChange) -> None:
        """Apply one changelog change (idempotent: re-applying it changes nothing)."""
        table = self.tables.get(change.dimension)
        if table is None:
            raise ValueError(
                f"dimension {quote_value(change.dimension)} is not a lookup dimension"
                " (attribution_rules changes go to AttributionRules.apply)"
            )
        table.add(change.key_string, change.valid_from_ms, change.attributes)

    def lookup(self, dimension: str, key: Iterable[str], at_ms: int) -> dict[str, str] | None:
        """Convenience lookup by key fields, e.g. lookup("products", ("acme", "sku-1"), t)."""
        return self.tables[dimension].lookup(join_key(key), at_ms)
