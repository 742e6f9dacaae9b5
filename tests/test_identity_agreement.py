"""The job's resolver (udfs.identity) and the independent model (tests/reference_identity.py)
agree on generated streams: profiles, links, merges and each event's profile. Streams at the
generator's rate span a minute; the slow ones span days, so limits with a period decide.

The end-to-end test compares the job with the model through Flink, ClickHouse and Redis; this
compares them directly in a second, so a disagreement in the rules shows here first, named.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests import reference_identity
from tidemark.gen import generate
from udfs.identity import DictStore, IdentityResolver, IdentityRules, extract_identifiers
from udfs.scd import row_time_ms
from udfs.validation import Accepted, SourceMeta, ValidationLimits, validate

R = reference_identity
TIGHT = {  # small caps, so limits, periods, refused merges and alias merges all happen
    "types": {
        "email": {"limit": 2},
        "phone": {"limit": "1 ever"},
        "device_id": {"limit": 2},
        "anonymous_id": {"limit": "2 daily"},
    },
    "max_identifiers": 6,
    "max_merges": 2,
    "alias": "merge_unidentified",
}
TIGHT_MODEL = R.IdentityRules(
    types={
        "user_id": R.IdentifierRule(0, 1),
        "email": R.IdentifierRule(1, 2),
        "phone": R.IdentifierRule(2, 1),
        "device_id": R.IdentifierRule(3, 2, moves=True),
        "anonymous_id": R.IdentifierRule(4, 2, 86_400_000, moves=True),
    },
    max_identifiers=6,
    max_merges=2,
    alias="merge_unidentified",
)


DAY = 86_400_000
PERIODS = {"types": {"email": {"limit": "2 weekly"}, "anonymous_id": {"limit": "2 daily"}}}
PERIODS_MODEL = R.IdentityRules(
    types={
        **R.DEFAULT_TYPES,
        "email": R.IdentifierRule(1, 2, 7 * DAY),
        "anonymous_id": R.IdentifierRule(4, 2, DAY, moves=True),
    }
)
SLOW = 0.05  # events per second: 12,000 records span about three days, so periods matter


@pytest.mark.parametrize(
    ("seed", "count", "rate", "mapping", "model"),
    [
        (31, 20_000, 1000.0, {}, None),
        (7, 8_000, 1000.0, {}, None),
        (11, 12_000, 1000.0, TIGHT, TIGHT_MODEL),
        (11, 12_000, SLOW, TIGHT, TIGHT_MODEL),
        (5, 12_000, SLOW, PERIODS, PERIODS_MODEL),
    ],
    ids=["default-31", "default-7", "tight-11", "tight-11-over-days", "periods-5-over-days"],
)
def test_resolver_agrees_with_the_model(
    seed: int, count: int, rate: float, mapping: dict, model: R.IdentityRules | None
) -> None:
    rules = IdentityRules.from_mapping(mapping)
    store = DictStore()
    resolver = IdentityResolver(rules, store)
    docs, seen = [], set()
    got_resolved = {}
    got_merges = []
    moves = 0
    version = 0
    for record in generate(seed=seed, count=count, events_per_second=rate):
        truth = record.truth
        key = (truth.tenant_id, truth.message_id)
        if not truth.valid or key in seen or truth.table != "events":
            continue
        seen.add(key)
        docs.append(json.loads(record.value, parse_float=Decimal))
        meta = SourceMeta("tidemark.events", 0, truth.index, truth.emit_ms)
        result = validate(record.value, meta, ValidationLimits(), truth.emit_ms + 1000)
        assert isinstance(result, Accepted)
        row = result.row
        version += 1
        resolution = resolver.resolve(
            row["tenant_id"],
            extract_identifiers(row, rules),
            row_time_ms(row["event_time"]),
            row["message_id"],
            version,
        )
        got_resolved[key] = resolution.profile_id
        got_merges.extend(
            (m.tenant_id, m.winner, m.loser, m.reason, m.message_id) for m in resolution.merges
        )
        moves += len(resolution.moved_from)
    want = reference_identity.expected_identity(docs, model)
    assert moves and got_merges, "the stream should move shared devices and merge profiles"
    assert got_merges == [tuple(m) for m in want.merges]
    assert got_resolved == want.resolved_by_key
    assert {(t, k, v): p for (t, k, v), p in store.links.items()} == want.links
    got_profiles = {}
    for tenant, profile_id in store.profiles:
        p = store.get_profile(tenant, profile_id)
        assert p is not None
        got_profiles[(tenant, p.profile_id)] = reference_identity.profile_facts(
            p.identifiers, p.first_seen_ms, p.last_seen_ms, p.merged_into
        )
    assert got_profiles == want.profile_facts()
    if rate == SLOW and mapping is PERIODS:
        # the periods bite: some profile holds more anonymous ids than one day allows
        assert any(len(ids.get("anonymous_id", ())) > 2 for ids, *_ in got_profiles.values())
