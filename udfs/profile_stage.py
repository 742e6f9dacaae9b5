"""The profile stage: enrich each event and cost record, and resolve every event to a profile.

It runs between dedup and the sinks, once per batch: the Java window upstream hands it one
newline-joined batch of raw records per shard per batch window, so Python is entered once per
batch and each record is touched by Python once: validated (udfs/connector_records.py), then
enriched and resolved in the same pass. State is touched once per batch per entry (see
udfs/identity_state.py), and the outputs leave as one batch per table, ready for one
idempotent insert each.

Order, and so determinism: identity resolution depends on the order events are applied in.
Within a batch, events are applied in Kafka order (source partition, then offset); batches
arrive in order. Producers partition by tenant (`tidemark produce` does), so every tenant's
events are applied in their Kafka order, on replay too, at parallelism 1. (At higher
parallelism the dedup stage may reorder records that cross a one-second batch boundary; that
matters only for conflicting identifiers of one tenant arriving within the same second.)

Dimensions: the files in `enrichment.dimensions_dir` are read in open(), then every change
from the changelog topic arrives on the broadcast input, is kept in broadcast state (so a
restore replays it onto the files) and applied to the in-memory tables, so every parallel
instance sees the same versions. Lookups are as of the event's own time.

Outputs, as (table, window_start, newline-joined JSON rows, shard):
    events            the input rows plus profile_id and the enrichment columns
    identity_links    identifier -> profile, for every link written in the batch
    profiles          every profile changed in the batch (its state after the batch)
    identity_merges   one row per merge (winner, loser, reason, event)
    profile_aliases   every old profile id re-keyed by a merge -> its live profile
    cost_records      the batch's valid cost records
    cost_allocations  the attribution of each cost record (split rows sum exactly)
    dead_letters      the batch's invalid records, each also sent once to the dead-letter
                      side output (DEAD_LETTER_OUTPUT_ID) for the dead-letter topic
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import KeyedBroadcastProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

from udfs.attribution import ATTRIBUTION_RULES, AttributionRules
from udfs.busy_time import BusyTime
from udfs.connector_records import (
    DEAD_LETTER_OUTPUT_ID,
    DEAD_LETTERS_TABLE,
    dead_letter_records,
    table_batches,
    validate_batch,
)
from udfs.dimensions import DimensionChange, Dimensions, parse_change
from udfs.enrichment import enrich_event
from udfs.identity import IdentityResolver, IdentityRules, extract_identifiers
from udfs.identity_state import SEP, CachedStateStore
from udfs.panes import money_text
from udfs.scd import row_time_ms
from udfs.validation import ValidationLimits, ms_text
from udfs.window_stage import LIVE_TABLE, WindowStage, WindowStageSettings

EVENTS_TABLE = "events"
COST_TABLE = "cost_records"

#: Dimension changes seen on the changelog, keyed "dimension \x1f key \x1f valid_from".
CHANGES_DESCRIPTOR = MapStateDescriptor("dimension_changes", Types.STRING(), Types.STRING())

#: The side output carrying the batches of ProfileStageSettings.side_output_tables again, for
#: a second sink (Redis): it spares a Python filter the whole stream's batches. The job builds
#: the typed tag; the function yields a tag made on the worker, as routing is by id only
#: (a tag built on the client holds Java objects that cannot be pickled with the function).
SIDE_OUTPUT_ID = "identity-batches"

#: The side output carrying the window stage's `redis_live` payloads (one JSON object per
#: batch) to the Redis live writer; they never reach ClickHouse.
LIVE_OUTPUT_ID = "live-batches"


@dataclass(frozen=True)
class ProfileStageSettings:
    """What the stage needs, resolved on the client and shipped with the job."""

    topic: str  # the source topic, named in dead letters
    limits: ValidationLimits
    dimensions_dir: str  # "" = no files: every lookup is unknown, all cost unallocated
    identity_rules: dict[str, Any]
    cache_entries: int
    side_output_tables: tuple[str, ...] = ()
    windows: WindowStageSettings | None = None  # None: no windows, live state or triggers


def kafka_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in Kafka order: the order identity is applied in (see the module docstring)."""
    return sorted(rows, key=lambda r: (r["source_partition"], r["source_offset"]))


def attribution_rules(directory: str) -> AttributionRules:
    """The rules file of the dimensions directory (none: all cost stays unallocated)."""
    found = sorted(Path(directory).glob(f"{ATTRIBUTION_RULES}.*")) if directory else []
    return AttributionRules.load(found[0]) if found else AttributionRules.from_rows([])


class ProfileStage(KeyedBroadcastProcessFunction):
    """Keyed by shard; the broadcast side carries dimension changes (raw changelog values)."""

    def __init__(self, settings: ProfileStageSettings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self.rules = IdentityRules.from_mapping(self.settings.identity_rules)
        state = runtime_context.get_map_state
        self.store = CachedStateStore(
            links=state(MapStateDescriptor("links", Types.STRING(), Types.STRING())),
            profiles=state(
                MapStateDescriptor("profiles", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
            ),
            sequence=state(MapStateDescriptor("sequence", Types.STRING(), Types.LONG())),
            max_entries=self.settings.cache_entries,
        )
        self.resolver = IdentityResolver(self.rules, self.store)
        directory = self.settings.dimensions_dir
        self.dimensions = Dimensions.load(Path(directory)) if directory else Dimensions()
        self.attribution = attribution_rules(directory)
        self.changes_replayed = False
        self.side_output = OutputTag(SIDE_OUTPUT_ID)
        self.live_output = OutputTag(LIVE_OUTPUT_ID)
        self.dead_letter_output = OutputTag(DEAD_LETTER_OUTPUT_ID)
        self.windows: WindowStage | None = None
        if self.settings.windows is not None:
            self.windows = WindowStage(self.settings.windows)
            self.windows.open(runtime_context)
        group = runtime_context.get_metrics_group().add_group("tidemark_profiles")
        self.unknown_dimensions = group.counter("unknown_dimension_lookups")
        self.merges = group.counter("merges")
        self.dropped = group.counter("identifiers_dropped")
        # shared devices taken over by a more recently identified user (README, "Identity")
        self.moved = group.counter("identifiers_moved")
        self.unresolved = group.counter("events_without_identifiers")
        self.dimension_changes = group.counter("dimension_changes")
        self.busy_time = BusyTime(group)

    # -- dimension changes (broadcast side)

    def _apply_change(self, change: DimensionChange) -> None:
        if change.dimension == ATTRIBUTION_RULES:
            self.attribution.apply(change)
        else:
            self.dimensions.apply(change)

    def _replay_changes(self, broadcast_state: Any) -> None:
        """After open (a start or a restore), re-apply every change kept in broadcast state."""
        if not self.changes_replayed:
            for _, raw in broadcast_state.items():
                self._apply_change(parse_change(raw))
            self.changes_replayed = True

    def process_broadcast_element(self, value: Row, ctx: Any) -> None:
        state = ctx.get_broadcast_state(CHANGES_DESCRIPTOR)
        self._replay_changes(state)
        raw = value[2].decode()  # a (dimension_changes, "", raw change, 0) batch row
        change = parse_change(raw)
        state.put(f"{change.dimension}{SEP}{change.key_string}{SEP}{change.valid_from_ms}", raw)
        self._apply_change(change)
        self.dimension_changes.inc()

    # -- batches (keyed side)

    def process_element(self, value: Row, ctx: Any) -> Iterator[Any]:
        self._replay_changes(ctx.get_broadcast_state(CHANGES_DESCRIPTOR))
        window_start, body, shard = value[0], value[1], value[2]
        with self.busy_time.measure():
            tables = self.process_batch(body)
            dead_letters = tables.get(DEAD_LETTERS_TABLE, [])
            out_rows = table_batches(tables, window_start, shard)
        side = self.settings.side_output_tables
        for row in out_rows:
            if row[0] == LIVE_TABLE:
                yield self.live_output, row
                continue
            yield row
            if row[0] in side:
                yield self.side_output, row
        for record in dead_letter_records(dead_letters):
            yield self.dead_letter_output, record

    def process_batch(self, body: bytes) -> dict[str, list[dict[str, Any]]]:
        """Validate a raw batch, then enrich, resolve and window what it holds: every output
        table's rows (see the module docstring)."""
        s = self.settings
        tables = validate_batch(s.topic, body, s.limits, int(time.time() * 1000))
        events, costs = tables.pop(EVENTS_TABLE, []), tables.get(COST_TABLE, [])
        if events:
            tables.update(self.resolve_events(events))
            if self.windows is not None:
                tables.update(self.windows.on_events(tables[EVENTS_TABLE]))
        if costs:
            allocations = self.allocate_costs(costs)
            tables["cost_allocations"] = allocations
            if self.windows is not None:
                for table, rows in self.windows.on_allocations(allocations).items():
                    tables.setdefault(table, []).extend(rows)
        return tables

    def resolve_events(self, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Apply identity and enrichment to a batch of events rows, in Kafka order."""
        rules, resolver, store = self.rules, self.resolver, self.store
        dims = self.dimensions
        merges: list[dict[str, Any]] = []
        aliases: list[dict[str, Any]] = []
        link_versions: dict[str, int] = {}
        unknown = dropped = moved = unresolved = 0
        events = kafka_order(rows)
        for row in events:
            tenant = row["tenant_id"]
            event_ms = row_time_ms(row["event_time"])
            version = store.next_sequence(tenant)
            resolution = resolver.resolve(
                tenant, extract_identifiers(row, rules), event_ms, row["message_id"], version
            )
            row["profile_id"] = resolution.profile_id
            if not resolution.profile_id:
                unresolved += 1
            dropped += len(resolution.dropped)
            moved += len(resolution.moved_from)
            for id_type, id_value in resolution.linked:
                link_versions[f"{tenant}{SEP}{id_type}{SEP}{id_value}"] = version
            for merge in resolution.merges:
                merges.append(
                    {
                        "tenant_id": tenant,
                        "winner": merge.winner,
                        "loser": merge.loser,
                        "reason": merge.reason,
                        "message_id": merge.message_id,
                        "event_time": row["event_time"],
                        "rekeyed": list(merge.rekeyed),
                        "version": version,
                    }
                )
                aliases.extend(
                    {
                        "tenant_id": tenant,
                        "profile_id": old,
                        "current_profile_id": merge.winner,
                        "version": version,
                    }
                    for old in merge.rekeyed
                )
            unknown += enrich_event(row, dims, event_ms)
        links, profiles = store.flush()
        self.unknown_dimensions.inc(unknown)
        self.merges.inc(len(merges))
        self.dropped.inc(dropped)
        self.moved.inc(moved)
        self.unresolved.inc(unresolved)
        return {
            EVENTS_TABLE: events,
            "identity_links": [link_row(k, p, link_versions[k]) for k, p in links.items()],
            "profiles": [profile_row(p) for p in profiles.values()],
            "identity_merges": merges,
            "profile_aliases": aliases,
        }

    def allocate_costs(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The attribution rows of a batch of cost_records rows."""
        out: list[dict[str, Any]] = []
        for row in rows:
            for index, a in enumerate(self.attribution.allocate(row)):
                out.append(
                    {
                        "tenant_id": row["tenant_id"],
                        "message_id": row["message_id"],
                        "allocation_index": index,
                        "team": a.team,
                        "feature": a.feature,
                        "customer": a.customer,
                        "cost_center": a.cost_center,
                        "environment": a.environment,
                        "rule_id": a.rule_id,
                        "share": money_text(a.share),
                        "billed_cost": money_text(a.billed_cost),
                        "effective_cost": money_text(a.effective_cost),
                        "usage_quantity": money_text(a.usage_quantity),
                        "currency": row.get("currency", ""),
                        "service": row.get("service", ""),
                        "account_id": row.get("account_id", ""),
                        "resource_id": row.get("resource_id", ""),
                        "usage_start": row["usage_start"],
                        "usage_end": row["usage_end"],
                        "source_partition": row["source_partition"],
                        "source_offset": row["source_offset"],
                    }
                )
        return out


def link_row(key: str, profile_id: str, version: int) -> dict[str, Any]:
    tenant, id_type, id_value = key.split(SEP, 2)
    return {
        "tenant_id": tenant,
        "id_type": id_type,
        "id_value": id_value,
        "profile_id": profile_id,
        "version": version,
    }


def profile_row(profile: Any) -> dict[str, Any]:
    return {
        "tenant_id": profile.tenant_id,
        "profile_id": profile.profile_id,
        "identifiers": profile.identifiers,
        "first_seen": ms_text(profile.first_seen_ms),
        "last_seen": ms_text(profile.last_seen_ms),
        "merges": profile.merges,
        "merged_into": profile.merged_into,
        "version": profile.version,
    }
