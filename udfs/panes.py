"""Pane aggregates: what the window views in ClickHouse sum into sliding windows.

Each counted row is folded into one pane per key (udfs/window_specs.py says why panes and
not windows). Three families of panes, their keys and values:

    cost_panes        tenant, team, feature, customer, service, currency, pane
                      -> billed, effective, usage quantity, allocations
                      in six grouping sets: all four dimensions, each one of team / feature
                      / customer / service rolled up to '*', and all four rolled up
    engagement_panes  tenant, campaign, event type, pane -> events, revenue, distinct profiles
    profile_panes     tenant, profile, event type, pane -> events, revenue, last event time

A pane changed in a batch is emitted whole, as absolute values with `version` = the rows
folded into it so far. That makes every emission a partial value of the pane, a row that
arrives late (within the allowed lateness) re-emits the corrected pane, and ClickHouse's
ReplacingMergeTree(version) keeps the most complete one, also when a replay re-sends older
versions: per-tenant Kafka order makes a version's value the same in every attempt.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from udfs.cached_state import CachedMap
from udfs.identity_state import SEP
from udfs.validation import ms_text

ROLLED_UP = "*"
ZERO = Decimal(0)

COST_PANES = "cost_panes"
ENGAGEMENT_PANES = "engagement_panes"
PROFILE_PANES = "profile_panes"


def money_text(value: Decimal) -> str:
    """A Decimal as plain text ClickHouse parses exactly (no exponent); the profile stage's
    allocation rows use it too."""
    return format(value, "f")


def cost_grouping_sets(
    team: str, feature: str, customer: str, service: str
) -> tuple[tuple[str, str, str, str], ...]:
    """The six (team, feature, customer, service) keys one allocation is folded into."""
    r = ROLLED_UP
    return (
        (team, feature, customer, service),
        (r, feature, customer, service),
        (team, r, customer, service),
        (team, feature, r, service),
        (team, feature, customer, r),
        (r, r, r, r),
    )


class Panes:
    """The panes of one shard: fold rows in, then emit the changed panes once per batch."""

    def __init__(self, store: CachedMap, pane_ms: int) -> None:
        self.store = store
        self.pane_ms = pane_ms
        self.changed: dict[str, list[Any]] = {}  # this batch's changed panes, key -> value

    def _pane(self, key: str, empty: list[Any]) -> list[Any]:
        value = self.changed.get(key)
        if value is None:
            value = self.store.load(key)
            if value is None:
                value = empty
            self.changed[key] = value
        return value

    def add_cost(
        self,
        tenant: str,
        dims: tuple[str, str, str, str],
        currency: str,
        usage_ms: int,
        amounts: tuple[Decimal, Decimal, Decimal],
    ) -> None:
        """Fold one cost allocation (billed, effective, usage quantity) into its six panes."""
        pane = usage_ms - usage_ms % self.pane_ms
        billed, effective, quantity = amounts
        for team, feature, customer, service in cost_grouping_sets(*dims):
            key = SEP.join(("c", tenant, team, feature, customer, service, currency, str(pane)))
            value = self._pane(key, [ZERO, ZERO, ZERO, 0])
            value[0] += billed
            value[1] += effective
            value[2] += quantity
            value[3] += 1

    def add_event(
        self,
        tenant: str,
        campaign: str,
        event_type: str,
        event_ms: int,
        revenue: Decimal | None,
        profile_id: str,
    ) -> None:
        """Fold one event into its engagement pane and (with a profile) its profile pane."""
        pane = event_ms - event_ms % self.pane_ms
        pane_text = str(pane)
        value = self._pane(
            SEP.join(("e", tenant, campaign, event_type, pane_text)), [0, ZERO, set()]
        )
        value[0] += 1
        if revenue is not None:
            value[1] += revenue
        if profile_id:
            value[2].add(profile_id)
            key = SEP.join(("p", tenant, profile_id, event_type, pane_text))
            mine = self._pane(key, [0, ZERO, event_ms])
            mine[0] += 1
            if revenue is not None:
                mine[1] += revenue
            if event_ms > mine[2]:
                mine[2] = event_ms

    def end_batch(self) -> dict[str, list[dict[str, Any]]]:
        """Save the changed panes; return their rows per table."""
        tables: dict[str, list[dict[str, Any]]] = {
            COST_PANES: [], ENGAGEMENT_PANES: [], PROFILE_PANES: []
        }  # fmt: skip
        for key, value in self.changed.items():
            self.store.save(key, value)
            kind, tenant, *rest = key.split(SEP)
            if kind == "c":
                team, feature, customer, service, currency, pane = rest
                tables[COST_PANES].append(
                    {
                        "tenant_id": tenant, "team": team, "feature": feature,
                        "customer": customer, "service": service, "currency": currency,
                        "pane_start": ms_text(int(pane)),
                        "billed_cost": money_text(value[0]),
                        "effective_cost": money_text(value[1]),
                        "usage_quantity": money_text(value[2]),
                        "allocations": value[3], "version": value[3],
                    }
                )  # fmt: skip
            elif kind == "e":
                campaign, event_type, pane = rest
                tables[ENGAGEMENT_PANES].append(
                    {
                        "tenant_id": tenant, "campaign_id": campaign, "event_type": event_type,
                        "pane_start": ms_text(int(pane)), "events": value[0],
                        "revenue": money_text(value[1]), "profiles": sorted(value[2]),
                        "version": value[0],
                    }
                )  # fmt: skip
            else:
                profile_id, event_type, pane = rest
                tables[PROFILE_PANES].append(
                    {
                        "tenant_id": tenant, "profile_id": profile_id, "event_type": event_type,
                        "pane_start": ms_text(int(pane)), "events": value[0],
                        "revenue": money_text(value[1]), "last_event_at": ms_text(value[2]),
                        "version": value[0],
                    }
                )  # fmt: skip
        self.changed = {}
        return tables
