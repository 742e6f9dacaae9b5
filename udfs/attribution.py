"""Cost attribution: rules as data, resolved per cost record, and exact shared-cost splits.

Why rules are data (a CSV/Parquet file plus changelog upserts) and not code: FinOps teams
change who owns what every week, and a rule change must take effect at a stated time without a
redeploy, while a replay of last month still uses last month's rules. Rules are therefore
versioned per rule_id exactly like a type-2 dimension (`udfs.scd.DimensionTable`), and
a record is attributed with the rules effective at its `usage_start`.

A rule (`attribution_rules.csv` / `.parquet`, or changelog dimension `attribution_rules`):

  rule_id, tenant_id, precedence, match_field, match_value,
  team, feature, customer, cost_center, environment, split, valid_from

  * tenant_id: a tenant, or `*` for every tenant.
  * match_field: `tag:<name>`, `account_id`, `resource_id`, `service`, or `untagged` (the
    record has no tags at all; match_value is ignored). `-` makes the row a tombstone: the
    rule_id no longer exists from valid_from on.
  * match_value: the exact value, or `*` for any non-empty value. An empty or missing record
    value never matches.
  * targets (team ... environment): empty = the rule does not set it; a literal; `{value}` =
    the matched value; `{tag:<name>}` = that tag of the record (empty or missing = not set).
    A cell starting with "{" must be one of the two templates, so a typo fails the load
    instead of becoming a team called "{vaule}".
  * split: "", `even:a|b|c` or `weights:a=3|b=1` (positive integer weights). Only the split of
    the rule that wins `team` is used, so a split rule must set team (its value is a label;
    the allocation rows carry the split's team names).

Resolution, for each of team, feature, customer, cost_center, environment independently: the
first matching rule in (precedence, rule_id) order that gives a non-empty value wins; nothing
-> "unallocated". Cost is never dropped: an untagged record no rule claims is one allocation
row of "unallocated" everywhere, carrying its whole amount.

Exact splits: each of billed_cost, effective_cost and usage_quantity is quantized to 12
decimals (half-even, the Decimal(38, 12) columns' scale) and split in integer units of 1e-12
by largest remainder: part_i = floor(|amount| * w_i / W) units, the units left over go one
each to the parts with the largest remainders (ties: earlier in the split list), then the sign
is put back. So the parts always sum exactly to the quantized amount, a negative credit splits
into negative parts, and an amount smaller than the number of parts gives some parts 0.
`share` is w_i / W rounded half-even to 12 decimals: informational only (1/3 is
0.333333333333, so shares may sum to 1 - n*5e-13); sums are taken over amounts, never
recomputed from shares.

Speed: the effective, ordered rule list of a tenant is precomputed as a timeline (change
points + snapshots) and found with one bisect; it is rebuilt lazily, once, after any rule
change. A tenant with no rules of its own shares the `*` timeline.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from udfs.contract import TENANT_ID_CHARS
from udfs.scd import (
    DimensionTable,
    FieldError,
    quote_value,
    read_table_rows,
    row_time_ms,
    row_valid_from,
)

if TYPE_CHECKING:
    from udfs.dimensions import DimensionChange

# The changelog dimension of the rules, and a rule's columns besides rule_id and valid_from.
ATTRIBUTION_RULES = "attribution_rules"
RULE_TARGETS = ("team", "feature", "customer", "cost_center", "environment")
RULE_REQUIRED = ("tenant_id", "precedence", "match_field")
RULE_OPTIONAL = ("match_value", *RULE_TARGETS, "split")
UNALLOCATED = "unallocated"
ALL_TENANTS = "*"
ANY_VALUE = "*"
TOMBSTONE = "-"
RULE_COLUMNS = ("rule_id", *RULE_REQUIRED, *RULE_OPTIONAL, "valid_from")
AMOUNT_FIELDS = ("billed_cost", "effective_cost", "usage_quantity")

_SCALE = 12
_QUANTUM = Decimal(1).scaleb(-_SCALE)
_CONTEXT = Context(prec=80)  # wide enough that no step below rounds except quantize itself
_ONE = Decimal(1).quantize(_QUANTUM)

# How a rule finds its value in a record.
_FROM_TAG, _FROM_FIELD, _FROM_UNTAGGED = 0, 1, 2
_MATCH_FIELDS = ("account_id", "resource_id", "service")
# How a target cell gives a value.
_LITERAL, _MATCHED, _TAG = 0, 1, 2
_TEAM = 0  # index of team in RULE_TARGETS


@dataclass(frozen=True)
class Rule:
    """One compiled version of a rule. The first fields are the row as written; `sets` and
    the match fields are the pre-digested form the per-record loop uses."""

    rule_id: str
    tenant_id: str
    precedence: int
    match_field: str
    match_value: str
    targets: tuple[str, ...]  # the five target cells as written, in RULE_TARGETS order
    split: tuple[tuple[str, int], ...]  # (team, weight); () = no split
    shares: tuple[Decimal, ...]  # w_i / W at 12 decimals, aligned with split
    source: int  # _FROM_TAG, _FROM_FIELD or _FROM_UNTAGGED
    source_name: str  # the tag name or the record field
    any_value: bool  # match_value is "*"
    sets: tuple[tuple[int, int, str], ...]  # (target index, _LITERAL/_MATCHED/_TAG, text)


@dataclass(frozen=True)
class Allocation:
    """One row of a cost record's attribution. Money and quantity are exact Decimals at 12
    decimals; rule_id is the rule that won team ("" when team is unallocated)."""

    team: str
    feature: str
    customer: str
    cost_center: str
    environment: str
    share: Decimal
    billed_cost: Decimal
    effective_cost: Decimal
    usage_quantity: Decimal
    rule_id: str


# --- amounts ------------------------------------------------------------------------------------


def quantize_amount(value: Decimal | str | int) -> Decimal:
    """An amount at 12 decimals, rounded half-even (the Decimal(38, 12) columns' scale)."""
    amount = value if isinstance(value, Decimal) else Decimal(value)
    return amount.quantize(_QUANTUM, ROUND_HALF_EVEN, _CONTEXT)


def split_amount(value: Decimal | str | int, weights: Iterable[int]) -> list[Decimal]:
    """Split an amount by positive integer weights into parts that sum exactly to it.

    Largest remainder in units of 1e-12 on the absolute value, ties to the earlier part, sign
    re-applied; see the module docstring.
    """
    weights = list(weights)
    total_weight = sum(weights)
    if not weights or any(w <= 0 for w in weights):
        raise ValueError(f"weights must be positive integers, got {weights}")
    units = int(quantize_amount(value).scaleb(_SCALE, _CONTEXT))
    sign = -1 if units < 0 else 1
    units = abs(units)
    parts: list[int] = []
    remainders: list[int] = []
    for weight in weights:
        part, remainder = divmod(units * weight, total_weight)
        parts.append(part)
        remainders.append(remainder)
    left = units - sum(parts)  # < len(weights): each part lost less than one unit
    if left:
        for i in sorted(range(len(parts)), key=lambda i: (-remainders[i], i))[:left]:
            parts[i] += 1
    return [Decimal(sign * part).scaleb(-_SCALE, _CONTEXT) for part in parts]


# --- compiling a rule ---------------------------------------------------------------------------


def _target(column: str, cell: str, source: int) -> tuple[int, str] | None:
    """A target cell as (kind, text), None when empty."""
    if not cell:
        return None
    if not cell.startswith("{"):
        return _LITERAL, cell
    if cell == "{value}":
        if source == _FROM_UNTAGGED:
            raise FieldError(column, "'{value}' needs a matched value; untagged has none")
        return _MATCHED, ""
    if cell.startswith("{tag:") and cell.endswith("}") and len(cell) > 6:
        return _TAG, cell[5:-1]
    raise FieldError(
        column, f"must be a literal, '{{value}}' or '{{tag:<name>}}', got {quote_value(cell)}"
    )


def _split(cell: str) -> tuple[tuple[str, int], ...]:
    """The split cell as ((team, weight), ...)."""
    if not cell:
        return ()
    kind, _, body = cell.partition(":")
    usage = f"must be empty, 'even:a|b' or 'weights:a=3|b=1', got {quote_value(cell)}"
    if kind not in ("even", "weights") or not body:
        raise FieldError("split", usage)
    parts: list[tuple[str, int]] = []
    for item in body.split("|"):
        if kind == "even":
            team, weight = item.strip(), 1
        else:
            team, equals, text = item.partition("=")
            team, text = team.strip(), text.strip()
            if not equals or not (text.isascii() and text.isdigit()) or int(text) <= 0:
                reason = f"weight of {quote_value(team)} must be a positive integer"
                raise FieldError("split", f"{reason}: {quote_value(cell)}")
            weight = int(text)
        if not team:
            raise FieldError("split", f"has an empty team name: {quote_value(cell)}")
        if any(team == seen for seen, _ in parts):
            raise FieldError("split", f"names team {quote_value(team)} twice: {quote_value(cell)}")
        parts.append((team, weight))
    return tuple(parts)


def compile_rule(rule_id: str, fields: Mapping[str, str]) -> Rule | None:
    """One rule version from its cells (all text, missing = ""); None for a tombstone row
    (match_field "-"). Raises FieldError naming the column."""
    if not rule_id:
        raise FieldError("rule_id", "must not be empty")
    match_field = fields.get("match_field", "")
    if match_field == TOMBSTONE:
        return None
    tenant_id = fields.get("tenant_id", "")
    if not tenant_id:
        raise FieldError("tenant_id", "must not be empty (use '*' for every tenant)")
    if tenant_id != ALL_TENANTS and not TENANT_ID_CHARS.issuperset(tenant_id):
        raise FieldError(
            "tenant_id",
            f"must be '*' or a tenant id (A-Z a-z 0-9 _ . -), got {quote_value(tenant_id)}",
        )
    text = fields.get("precedence", "")
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()):
        raise FieldError("precedence", f"must be an integer, got {quote_value(text)}")
    precedence = int(text)

    if match_field.startswith("tag:") and len(match_field) > 4:
        source, source_name = _FROM_TAG, match_field[4:]
    elif match_field in _MATCH_FIELDS:
        source, source_name = _FROM_FIELD, match_field
    elif match_field == "untagged":
        source, source_name = _FROM_UNTAGGED, ""
    else:
        raise FieldError(
            "match_field",
            "must be tag:<name>, account_id, resource_id, service, untagged or '-' (tombstone),"
            f" got {quote_value(match_field)}",
        )
    match_value = fields.get("match_value", "")
    if source != _FROM_UNTAGGED and not match_value:
        raise FieldError("match_value", "must not be empty (use '*' for any non-empty value)")

    cells = tuple(fields.get(column, "") for column in RULE_TARGETS)
    sets: list[tuple[int, int, str]] = []
    for index, (column, cell) in enumerate(zip(RULE_TARGETS, cells, strict=True)):
        target = _target(column, cell, source)
        if target is not None:
            sets.append((index, *target))
    if not sets:
        raise FieldError("team", f"the rule sets none of {', '.join(RULE_TARGETS)}")
    split = _split(fields.get("split", ""))
    if split and not cells[_TEAM]:
        raise FieldError("split", "needs the team column set: only the rule that wins team splits")
    total = sum(weight for _, weight in split)
    shares = tuple(
        (Decimal(weight) / Decimal(total)).quantize(_QUANTUM, ROUND_HALF_EVEN, _CONTEXT)
        for _, weight in split
    )
    return Rule(
        rule_id=rule_id,
        tenant_id=tenant_id,
        precedence=precedence,
        match_field=match_field,
        match_value=match_value,
        targets=cells,
        split=split,
        shares=shares,
        source=source,
        source_name=source_name,
        any_value=match_value == ANY_VALUE,
        sets=tuple(sets),
    )


def _cell(value: Any) -> str:
    """A from_rows value as text: None -> "", ints (precedence, valid_from) in decimal."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"must be text or an integer, got {type(value).__name__}")


def _order(rule: Rule) -> tuple[int, str]:
    return rule.precedence, rule.rule_id


# --- the rule set -------------------------------------------------------------------------------


class AttributionRules:
    """All versions of all rules, and the per-record resolution."""

    def __init__(self) -> None:
        self._table: DimensionTable[Rule] = DimensionTable(ATTRIBUTION_RULES)
        self._own_tenants: set[str] = set()  # tenants named by some rule version
        # tenant (or "*") -> (change points, ordered rules effective from each point)
        self._timelines: dict[str, tuple[list[int], list[tuple[Rule, ...]]]] = {}

    # -- building

    @classmethod
    def load(cls, path: str | Path) -> AttributionRules:
        """Read attribution_rules.csv or .parquet; ValueError naming file, row and column."""
        rules = cls()
        for number, cells in read_table_rows(path, RULE_COLUMNS):
            rules._add_row(cells, f"{path} row {number}")
        return rules

    @classmethod
    def from_rows(
        cls, rows: Iterable[Mapping[str, Any]], source: str = "rules"
    ) -> AttributionRules:
        """Rules from mappings of column -> str/int/None (missing columns read as "")."""
        rules = cls()
        for number, row in enumerate(rows, start=1):
            where = f"{source} row {number}"
            cells: dict[str, str] = {}
            for column, value in row.items():
                try:
                    cells[column] = _cell(value)
                except TypeError as exc:
                    raise ValueError(f"{where} column '{column}': {exc}") from None
            rules._add_row(cells, where)
        return rules

    def _add_row(self, cells: Mapping[str, str], where: str) -> None:
        try:
            valid_from_ms = row_valid_from(cells)
            rule_id = cells.get("rule_id", "")
            rule = compile_rule(rule_id, cells)
        except FieldError as exc:
            raise ValueError(f"{where} column '{exc.column}': {exc.reason}") from None
        self.add(rule_id, valid_from_ms, rule)

    def add(self, rule_id: str, valid_from_ms: int, rule: Rule | None) -> None:
        """Add one version (None = tombstone); the same (rule_id, valid_from) replaces it."""
        self._table.add(rule_id, valid_from_ms, rule)
        if rule is not None:
            self._own_tenants.add(rule.tenant_id)
        self._timelines.clear()

    def apply(self, change: DimensionChange) -> None:
        """Apply one changelog change to the rules (idempotent)."""
        if change.dimension != ATTRIBUTION_RULES:
            raise ValueError(
                f"change is for dimension {change.dimension!r}, not {ATTRIBUTION_RULES!r}"
            )
        rule_id = change.key["rule_id"]
        rule = None
        if change.attributes is not None:  # None for a delete
            try:
                rule = compile_rule(rule_id, change.attributes)
            except FieldError as exc:
                raise ValueError(f"field 'attributes.{exc.column}' {exc.reason}") from None
        self.add(rule_id, change.valid_from_ms, rule)

    # -- resolving

    def _timeline(self, scope: str) -> tuple[list[int], list[tuple[Rule, ...]]]:
        """Change points and the ordered effective rules from each, for a tenant or "*"."""
        wanted = (scope, ALL_TENANTS)
        relevant = [
            (times, values)
            for _, times, values in self._table.items()
            if any(rule is not None and rule.tenant_id in wanted for rule in values)
        ]
        points = sorted({t for times, _ in relevant for t in times})
        snapshots: list[tuple[Rule, ...]] = []
        for point in points:
            active = []
            for times, values in relevant:
                i = bisect_right(times, point)
                rule = values[i - 1] if i else None
                if rule is not None and rule.tenant_id in wanted:
                    active.append(rule)
            active.sort(key=_order)
            snapshots.append(tuple(active))
        return points, snapshots

    def active_rules(self, tenant_id: str, at_ms: int) -> tuple[Rule, ...]:
        """The rules effective for a tenant at a time, in (precedence, rule_id) order."""
        scope = tenant_id if tenant_id in self._own_tenants else ALL_TENANTS
        timeline = self._timelines.get(scope)
        if timeline is None:
            timeline = self._timelines[scope] = self._timeline(scope)
        points, snapshots = timeline
        i = bisect_right(points, at_ms)
        return snapshots[i - 1] if i else ()

    def allocate(self, record_row: Mapping[str, Any], at_ms: int | None = None) -> list[Allocation]:
        """Attribute one validated cost_records row: one Allocation per split team (or one
        with share 1). Rules effective at usage_start are used unless at_ms is given."""
        if at_ms is None:
            at_ms = row_time_ms(record_row["usage_start"])
        tags = record_row.get("tags")
        if tags.__class__ is str:
            tags = orjson.loads(tags) if tags else None
        if not tags:
            tags = {}
        resolved: list[str | None] = [None, None, None, None, None]
        remaining = 5
        team_rule: Rule | None = None
        for rule in self.active_rules(record_row["tenant_id"], at_ms):
            source = rule.source
            if source == _FROM_UNTAGGED:
                if tags:
                    continue
                matched = ""
            else:
                matched = (
                    tags.get(rule.source_name)
                    if source == _FROM_TAG
                    else record_row.get(rule.source_name)
                )
                if not matched or not (rule.any_value or matched == rule.match_value):
                    continue
            for index, kind, text in rule.sets:
                if resolved[index] is not None:
                    continue
                if kind == _LITERAL:
                    value = text
                elif kind == _MATCHED:
                    value = matched
                else:
                    value = tags.get(text) or ""
                if value:
                    resolved[index] = value
                    remaining -= 1
                    if index == _TEAM:
                        team_rule = rule
            if not remaining:
                break
        team, feature, customer, cost_center, environment = (
            UNALLOCATED if value is None else value for value in resolved
        )
        amounts = [record_row.get(field) or "0" for field in AMOUNT_FIELDS]
        if team_rule is None or not team_rule.split:
            billed, effective, quantity = (quantize_amount(amount) for amount in amounts)
            rule_id = team_rule.rule_id if team_rule is not None else ""
            return [
                Allocation(
                    team,
                    feature,
                    customer,
                    cost_center,
                    environment,
                    _ONE,
                    billed,
                    effective,
                    quantity,
                    rule_id,
                )
            ]
        weights = [weight for _, weight in team_rule.split]
        billed, effective, quantity = (split_amount(amount, weights) for amount in amounts)
        return [
            Allocation(
                split_team,
                feature,
                customer,
                cost_center,
                environment,
                share,
                billed[i],
                effective[i],
                quantity[i],
                team_rule.rule_id,
            )
            for i, ((split_team, _), share) in enumerate(
                zip(team_rule.split, team_rule.shares, strict=True)
            )
        ]

    def __len__(self) -> int:
        """The number of rule_ids ever seen (tombstoned ones included)."""
        return len(self._table)
