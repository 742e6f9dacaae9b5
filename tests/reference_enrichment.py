"""The expected enrichment and cost allocation of one record, computed independently.

A plain, literal model: it never imports the production enrichment / dimension /
attribution code, and uses only the standard library (pyarrow only to read Parquet files).

- `expected_enrichment(event_doc, dimension_dir)`: product, campaign and account attributes
  of a customer event, as of its event time, from `products`, `campaigns` and `accounts`
  dimension files (CSV or Parquet, versioned by `valid_from`, optional `deleted` tombstones).
- `expected_allocations(cost_doc, rules_path)`: the rows a cost record is split into by the
  attribution rules in effect at its `usage_start`.
"""

from __future__ import annotations

import bisect
import csv
import re
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction
from pathlib import Path

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UNKNOWN = "unknown"
UNALLOCATED = "unallocated"
DIMENSIONS = ("team", "feature", "customer", "cost_center", "environment")
AMOUNTS = ("billed_cost", "effective_cost", "usage_quantity")
UNIT = Decimal("1e-12")

_dimension_cache: dict[str, dict[str, dict[tuple, tuple[list[int], list]]]] = {}
_rules_cache: dict[str, dict[str, tuple[list[int], list[dict]]]] = {}


def clear_cache() -> None:
    _dimension_cache.clear()
    _rules_cache.clear()


# --- small readers ------------------------------------------------------------------------------


def epoch_millis(value: object) -> int:
    """A time as epoch millis: int millis, a digit string, ISO-8601 with a zone, or a datetime
    (a naive one is UTC)."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        parsed = value if value.tzinfo else value.replace(tzinfo=UTC)
        return (parsed - EPOCH) // timedelta(milliseconds=1)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"time without a zone: {value!r}")
    return (parsed - EPOCH) // timedelta(milliseconds=1)


def text(value: object) -> str:
    """A cell as text; a missing cell is ""."""
    if value is None:
        return ""
    return str(value)


def read_rows(path: Path) -> list[dict]:
    """All rows of a CSV (header row) or Parquet file, as dicts."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def find_file(directory: Path, stem: str) -> Path | None:
    csv_path = directory / f"{stem}.csv"
    parquet_path = directory / f"{stem}.parquet"
    if csv_path.exists() and parquet_path.exists():
        raise AssertionError(f"both {csv_path} and {parquet_path} exist; which one is meant?")
    if csv_path.exists():
        return csv_path
    if parquet_path.exists():
        return parquet_path
    return None


def is_tombstone(row: dict) -> bool:
    value = row.get("deleted")
    if value is True:
        return True
    return text(value).strip().lower() in ("true", "1")


def versioned(rows: list[dict], key_of) -> dict[tuple, tuple[list[int], list]]:
    """key -> (sorted valid_from list, rows in the same order). Rows with the same key and
    valid_from: the later one in the file wins (it sorts after and bisect_right finds it)."""
    grouped: dict[tuple, list[tuple[int, int, dict]]] = {}
    for position, row in enumerate(rows):
        grouped.setdefault(key_of(row), []).append((epoch_millis(row["valid_from"]), position, row))
    table = {}
    for key, versions in grouped.items():
        versions.sort(key=lambda v: (v[0], v[1]))
        table[key] = ([v[0] for v in versions], [v[2] for v in versions])
    return table


def as_of(table: dict[tuple, tuple[list[int], list]], key: tuple, at_ms: int):
    """The version of `key` with the greatest valid_from <= at_ms; None if there is none."""
    if key not in table:
        return None
    times, rows = table[key]
    i = bisect.bisect_right(times, at_ms)
    if i == 0:
        return None
    return rows[i - 1]


# --- enrichment ---------------------------------------------------------------------------------


def load_dimensions(dimension_dir: str | Path) -> dict[str, dict[tuple, tuple[list[int], list]]]:
    """The three dimension tables of a directory, read once and cached."""
    directory = Path(dimension_dir).resolve()
    cache_key = str(directory)
    if cache_key in _dimension_cache:
        return _dimension_cache[cache_key]
    keys = {
        "products": lambda row: (text(row["tenant_id"]), text(row["sku"])),
        "campaigns": lambda row: (text(row["tenant_id"]), text(row["campaign_id"])),
        "accounts": lambda row: (text(row["tenant_id"]),),
    }
    tables = {}
    for stem, key_of in keys.items():
        path = find_file(directory, stem)
        tables[stem] = versioned(read_rows(path), key_of) if path else {}
    _dimension_cache[cache_key] = tables
    return tables


def lookup(table, key: tuple, at_ms: int, column: str) -> str:
    row = as_of(table, key, at_ms)
    if row is None or is_tombstone(row):
        return UNKNOWN
    return text(row.get(column))


def product_ids(doc: dict) -> list[str]:
    properties = doc.get("properties")
    if not isinstance(properties, dict):
        return []
    if properties.get("product_ids") is not None:
        return list(properties["product_ids"])
    if properties.get("product_id") is not None:
        return [properties["product_id"]]
    return []


def expected_enrichment(event_doc: dict, dimension_dir: str | Path) -> dict:
    """product_names / product_categories (one per product id), campaign_name /
    campaign_channel ("" without a campaign id), account_plan / account_region; anything not
    found (or deleted) as of the event time is "unknown"."""
    tables = load_dimensions(dimension_dir)
    tenant_id = event_doc["tenant_id"]
    at_ms = epoch_millis(event_doc["timestamp"])

    names = []
    categories = []
    for sku in product_ids(event_doc):
        names.append(lookup(tables["products"], (tenant_id, sku), at_ms, "name"))
        categories.append(lookup(tables["products"], (tenant_id, sku), at_ms, "category"))

    properties = event_doc.get("properties")
    campaign_id = properties.get("campaign_id") if isinstance(properties, dict) else None
    if campaign_id:
        campaign_name = lookup(tables["campaigns"], (tenant_id, campaign_id), at_ms, "name")
        campaign_channel = lookup(tables["campaigns"], (tenant_id, campaign_id), at_ms, "channel")
    else:
        campaign_name = ""
        campaign_channel = ""

    return {
        "product_names": names,
        "product_categories": categories,
        "campaign_name": campaign_name,
        "campaign_channel": campaign_channel,
        "account_plan": lookup(tables["accounts"], (tenant_id,), at_ms, "plan"),
        "account_region": lookup(tables["accounts"], (tenant_id,), at_ms, "region"),
    }


# --- cost allocation ----------------------------------------------------------------------------


def load_rules(rules_path: str | Path) -> dict[str, tuple[list[int], list[dict]]]:
    """rule_id -> its versions, from an attribution_rules.csv / .parquet file (cached)."""
    path = Path(rules_path).resolve()
    cache_key = str(path)
    if cache_key in _rules_cache:
        return _rules_cache[cache_key]
    rows = []
    for row in read_rows(path):
        rows.append(
            {name: text(value) if name != "valid_from" else value for name, value in row.items()}
        )
    table = versioned(rows, lambda row: row["rule_id"])
    _rules_cache[cache_key] = table
    return table


def tags_of(doc: dict) -> dict:
    tags = doc.get("tags")
    return tags if isinstance(tags, dict) else {}


def match(rule: dict, doc: dict) -> tuple[bool, str]:
    """Whether the rule's condition holds for the doc, and the matched value."""
    match_field = rule["match_field"]
    match_value = rule["match_value"]
    if match_field == "untagged":
        return (not tags_of(doc), "")
    if match_field.startswith("tag:"):
        value = text(tags_of(doc).get(match_field[len("tag:") :]))
    elif match_field in ("account_id", "resource_id", "service"):
        value = text(doc.get(match_field))
    else:
        return (False, "")
    if value == "":
        return (False, "")
    if match_value == "*" or match_value == value:
        return (True, value)
    return (False, "")


def target(cell: str, matched_value: str, doc: dict) -> str:
    """What a target cell sets: "" means not set."""
    if cell == "{value}":
        return matched_value
    tag = re.fullmatch(r"\{tag:(.+)\}", cell)
    if tag:
        return text(tags_of(doc).get(tag.group(1)))
    return cell


def parse_split(split: str, team: str) -> list[tuple[str, Fraction]]:
    """(team, weight) pairs in split order."""
    split = split.strip()
    if split == "":
        return [(team, Fraction(1))]
    if split.startswith("even:"):
        return [(name.strip(), Fraction(1)) for name in split[len("even:") :].split("|")]
    if split.startswith("weights:"):
        parts = []
        for item in split[len("weights:") :].split("|"):
            name, weight = item.split("=")
            parts.append((name.strip(), Fraction(Decimal(weight.strip()))))
        return parts
    raise AssertionError(f"unknown split: {split!r}")


def amount(doc: dict, name: str) -> Decimal:
    value = doc.get(name)
    if value is None:
        return Decimal(0)
    with localcontext() as ctx:
        ctx.prec = 80
        return Decimal(str(value)).quantize(UNIT, rounding=ROUND_HALF_EVEN)


def split_amount(value: Decimal, weights: list[Fraction]) -> list[Decimal]:
    """Split an amount (already at 12 decimals) by weights in units of 1e-12, exactly."""
    sign = -1 if value < 0 else 1
    with localcontext() as ctx:
        ctx.prec = 80
        units = int(abs(value) * 10**12)
    total = sum(weights)
    parts = []
    remainders = []
    for weight in weights:
        share = Fraction(units) * weight / total
        whole = share.numerator // share.denominator
        parts.append(whole)
        remainders.append(share - whole)
    left = units - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        parts[i] += 1
    return [Decimal(f"{sign * part}e-12") for part in parts]


def expected_allocations(cost_doc: dict, rules_path: str | Path) -> list[dict]:
    """The allocation rows of one cost record, in split order."""
    rules = load_rules(rules_path)
    tenant_id = cost_doc["tenant_id"]
    at_ms = epoch_millis(cost_doc["usage_start"])

    applicable = []  # (precedence, rule_id, rule, matched value)
    for rule_id in rules:
        rule = as_of(rules, rule_id, at_ms)
        if rule is None or rule["match_field"] == "-":
            continue
        if rule["tenant_id"] != "*" and rule["tenant_id"] != tenant_id:
            continue
        ok, matched_value = match(rule, cost_doc)
        if ok:
            applicable.append((int(rule["precedence"]), rule_id, rule, matched_value))
    applicable.sort(key=lambda item: (item[0], item[1]))

    chosen = {}
    team_rule = None
    for dimension in DIMENSIONS:
        chosen[dimension] = UNALLOCATED
        for _, _, rule, matched_value in applicable:
            value = target(rule.get(dimension, ""), matched_value, cost_doc)
            if value != "":
                chosen[dimension] = value
                if dimension == "team":
                    team_rule = rule
                break

    split = team_rule.get("split", "") if team_rule is not None else ""
    teams = parse_split(split, chosen["team"])
    weights = [weight for _, weight in teams]
    shares = {name: split_amount(amount(cost_doc, name), weights) for name in AMOUNTS}

    allocations = []
    for i, (team, _) in enumerate(teams):
        row = {
            "team": team,
            "feature": chosen["feature"],
            "customer": chosen["customer"],
            "cost_center": chosen["cost_center"],
            "environment": chosen["environment"],
        }
        for name in AMOUNTS:
            row[name] = shares[name][i]
        allocations.append(row)
    return allocations
