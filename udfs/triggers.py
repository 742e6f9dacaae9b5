"""Trigger rules over live state: the model, its validation, and how a rule is judged.

A rule holds for an entity when all its conditions hold on the entity's live metrics right
after a row was applied to it; the engine in udfs/live_state.py turns "not holding -> holding"
into one numbered notification. This module is Flink-free and has no state of its own, so the
client can validate `live.triggers` before submission with the same code the job runs.

Config shape (`live.triggers`), rule id -> spec:
    {entity: profile|team, when: [condition, ...]}
    condition: {metric: count, event: <type>, window: 30m, op, value}
             | {metric: sum, field: revenue|value, window, event?: <type>, op, value}  (profile)
             | {metric: sum, field: billed_cost|effective_cost, window, op, value}     (team)
             | {metric: cart_value, op, value}                                          (profile)
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal, InvalidOperation
from typing import Any

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
ENTITIES = ("profile", "team")
PROFILE_SUM_FIELDS = ("revenue", "value")
TEAM_SUM_FIELDS = ("billed_cost", "effective_cost")

DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "browse_abandon": {
        "entity": "profile",
        "when": [
            {"metric": "count", "event": "Product Viewed", "window": "30m", "op": ">", "value": 3},
            {
                "metric": "count",
                "event": "Order Completed",
                "window": "30m",
                "op": "==",
                "value": 0,
            },
        ],
    },
    "big_cart": {"entity": "profile", "when": [{"metric": "cart_value", "op": ">", "value": 200}]},
    "team_cost_hour": {
        "entity": "team",
        "when": [
            {"metric": "sum", "field": "billed_cost", "window": "1h", "op": ">", "value": 100}
        ],
    },
}

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"([0-9]+)([smhd])")


def duration_ms(text: str) -> int:
    """Milliseconds of a duration like "10s", "30m", "1h", "1d" (one positive integer, one unit).

    Strict on purpose: the window's text is also its name in Redis fields and metric labels,
    so "1.5h" or " 1h" would be ambiguous names for the same size.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a duration like '30m', got {text!r}")
    match = _DURATION.fullmatch(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"invalid duration {text!r} (a positive integer and one of s, m, h, d)")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def decimal_text(value: Decimal | int) -> str:
    """Plain decimal text: no exponent, trailing zeros stripped, "0" for zero (also -0)."""
    if not value:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


@dataclass(frozen=True)
class Condition:
    """One comparison of a live metric against a constant.

    `label` names the metric (not the comparison) and is the key of the notification's
    `values`; it is also the memo key while one row's rules are judged, so two conditions on
    the same metric are computed once.
    """

    metric: str  # count | sum | cart_value
    op: str
    value: Decimal
    event: str | None = None  # count: required; sum: optional filter on event_type
    field: str | None = None  # sum only
    window: str | None = None  # the duration text, as configured ("30m")
    window_ms: int = 0
    label: str = dataclass_field(init=False, compare=False, default="")

    def __post_init__(self) -> None:
        label = metric_label(self.metric, self.event, self.field, self.window)
        object.__setattr__(self, "label", label)  # computed once: it is read per row

    def compare(self, measured: Decimal | int) -> bool:
        return OPERATORS[self.op](measured, self.value)


@dataclass(frozen=True)
class TriggerRule:
    """All of `when` must hold; `entity` says which kind of live state it is judged on."""

    rule_id: str
    entity: str  # profile | team
    when: tuple[Condition, ...]

    @property
    def max_window_ms(self) -> int:
        return max((c.window_ms for c in self.when), default=0)


def metric_label(metric: str, event: str | None, field: str | None, window: str | None) -> str:
    """`count:Product Viewed:30m`, `sum:billed_cost:1h`, `sum:value:Product Added:30m`,
    `cart_value`."""
    if metric == "count":
        return f"count:{event}:{window}"
    if metric == "sum":
        return f"sum:{field}:{event}:{window}" if event else f"sum:{field}:{window}"
    return metric


def holds(rule: TriggerRule, metrics_lookup: Callable[[Condition], Decimal | int]) -> bool:
    """Whether every condition holds; stops at the first that does not, so a rule whose first
    condition is rarely true (browse_abandon) costs one metric per row."""
    for cond in rule.when:  # noqa: SIM110 -- a plain loop: all() over a generator is slower
        if not OPERATORS[cond.op](metrics_lookup(cond), cond.value):
            return False
    return True


def rule_values(
    rule: TriggerRule, metrics_lookup: Callable[[Condition], Decimal | int]
) -> dict[str, str]:
    """The notification's `values`: metric label -> value text, in condition order."""
    return {cond.label: decimal_text(metrics_lookup(cond)) for cond in rule.when}


# -- parsing


def parse_rules(
    mapping: Mapping[str, Any], prefix: str = "live.triggers"
) -> tuple[TriggerRule, ...]:
    """Validated rules, in the mapping's order. Errors name the exact key:
    "live.triggers.big_cart.when[0].op: unknown operator '=>'"."""
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{prefix}: expected a mapping of rule id -> rule, got {mapping!r}")
    return tuple(_rule(rule_id, spec, prefix) for rule_id, spec in mapping.items())


def merged_rules(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """DEFAULT_RULES with the configured rules laid over them by id; a rule set to null (None)
    is removed, so a default can be switched off without restating the others."""
    if overrides is None:
        return dict(DEFAULT_RULES)
    if not isinstance(overrides, Mapping):
        raise ValueError(f"live.triggers: expected a mapping of rule id -> rule, got {overrides!r}")
    merged: dict[str, Any] = dict(DEFAULT_RULES)
    for rule_id, spec in overrides.items():
        if spec is None:
            merged.pop(rule_id, None)
        else:
            merged[rule_id] = spec
    return merged


def _rule(rule_id: Any, spec: Any, prefix: str) -> TriggerRule:
    if not isinstance(rule_id, str) or not rule_id or "|" in rule_id:
        raise ValueError(f"{prefix}: rule id {rule_id!r} must be a non-empty string without '|'")
    key = f"{prefix}.{rule_id}"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{key}: expected a mapping with entity and when, got {spec!r}")
    unknown = sorted(set(spec) - {"entity", "when"}, key=str)
    if unknown:
        raise ValueError(f"{key}.{unknown[0]}: unknown key (expected entity, when)")
    entity = spec.get("entity")
    if entity not in ENTITIES:
        raise ValueError(f"{key}.entity: expected one of profile, team, got {entity!r}")
    when = spec.get("when")
    if not isinstance(when, list | tuple) or not when:
        raise ValueError(f"{key}.when: expected a non-empty list of conditions, got {when!r}")
    conditions = tuple(_condition(c, entity, f"{key}.when[{i}]") for i, c in enumerate(when))
    return TriggerRule(rule_id, entity, conditions)


_KEYS = {
    "count": (
        {"metric", "event", "window", "op", "value"},
        {"metric", "event", "window", "op", "value"},
    ),
    "sum": (
        {"metric", "field", "window", "op", "value"},
        {"metric", "field", "window", "event", "op", "value"},
    ),
    "cart_value": ({"metric", "op", "value"}, {"metric", "op", "value"}),
}  # metric -> (required keys, allowed keys)
_METRICS_OF = {"profile": ("count", "sum", "cart_value"), "team": ("sum",)}


def _condition(spec: Any, entity: str, key: str) -> Condition:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{key}: expected a mapping, got {spec!r}")
    metric = spec.get("metric")
    if metric not in _METRICS_OF[entity]:
        allowed = ", ".join(_METRICS_OF[entity])
        raise ValueError(
            f"{key}.metric: expected one of {allowed} for a {entity} rule, got {metric!r}"
        )
    required, allowed = _KEYS[metric]
    unknown = sorted(set(spec) - allowed, key=str)
    if unknown:
        raise ValueError(f"{key}.{unknown[0]}: unknown key for metric {metric}")
    missing = sorted(required - set(spec))
    if missing:
        raise ValueError(f"{key}.{missing[0]}: required for metric {metric}")

    op = spec["op"]
    if op not in OPERATORS:
        raise ValueError(
            f"{key}.op: unknown operator {op!r} (expected one of {', '.join(OPERATORS)})"
        )
    value = _number(spec["value"], f"{key}.value")

    event = spec.get("event")
    if event is not None and (not isinstance(event, str) or not event):
        raise ValueError(f"{key}.event: expected a non-empty event type, got {event!r}")
    field = spec.get("field")
    if metric == "sum":
        fields = PROFILE_SUM_FIELDS if entity == "profile" else TEAM_SUM_FIELDS
        if field not in fields:
            raise ValueError(f"{key}.field: expected one of {', '.join(fields)}, got {field!r}")
        if entity == "team" and event is not None:
            raise ValueError(f"{key}.event: team sums have no event filter")
    window = spec.get("window")
    window_ms = 0
    if window is not None:
        try:
            window_ms = duration_ms(window)
        except ValueError as exc:
            raise ValueError(f"{key}.window: {exc}") from None
    return Condition(metric, op, value, event, field, window, window_ms)


def _number(raw: Any, key: str) -> Decimal:
    """The comparison constant as an exact Decimal (floats via their shortest repr, so 0.1 is
    0.1, not 0.1000000000000000055...)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | Decimal | str):
        raise ValueError(f"{key}: expected a number, got {raw!r}")
    try:
        number = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValueError(f"{key}: expected a number, got {raw!r}") from None
    if not number.is_finite():
        raise ValueError(f"{key}: expected a finite number, got {raw!r}")
    return number
