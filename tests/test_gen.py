"""tidemark.gen: determinism, the advertised rates and realism, and, the point of it all,
that the validator agrees with the generator's independently written truth on every record."""

from __future__ import annotations

import argparse
import collections
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from tidemark import gen
from tidemark.gen import DEFAULT_START_MS, GeneratedRecord, Truth, generate
from udfs.contract import REASON_CODES
from udfs.validation import Accepted, SourceMeta, ValidationLimits, validate

N = 20_000
LIMITS = ValidationLimits()


@cache
def stream(seed: int = 7, count: int = N, **kwargs: Any) -> tuple[GeneratedRecord, ...]:
    return tuple(generate(seed, count, **kwargs))


def event_ms(value: Any) -> int:
    """An event time from a generated value, parsed here rather than by the validator."""
    if isinstance(value, int):
        return value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return round(parsed.timestamp() * 1000)


def docs(records: tuple[GeneratedRecord, ...]) -> list[tuple[Truth, dict[str, Any]]]:
    """(truth, parsed value) of the valid originals (no duplicates, no malformed)."""
    return [
        (r.truth, orjson.loads(r.value))
        for r in records
        if r.truth.valid and r.truth.duplicate_of is None
    ]


# --- determinism and shape ----------------------------------------------------------------------


def test_same_seed_same_bytes_different_seed_differs() -> None:
    first = [(r.key, r.value, r.truth) for r in generate(42, 3000)]
    again = [(r.key, r.value, r.truth) for r in generate(42, 3000)]
    other = [(r.key, r.value) for r in generate(43, 3000)]
    assert first == again
    assert sum(a[:2] == b for a, b in zip(first, other, strict=True)) == 0


def test_count_indexes_keys_and_clock() -> None:
    records = stream()
    assert len(records) == N
    assert [r.truth.index for r in records] == list(range(N))
    for r in records:
        assert r.key == f"{r.truth.tenant_id}:{r.truth.message_id}".encode()
        assert b"\n" not in r.value
    assert records[0].truth.emit_ms == DEFAULT_START_MS
    assert records[-1].truth.emit_ms == DEFAULT_START_MS + (N - 1)  # 1000 records/s: 1 ms apart


def test_start_and_rate_move_the_clock() -> None:
    start = 1_700_000_000_000
    records = list(generate(1, 501, start_ms=start, events_per_second=50))
    assert records[-1].truth.emit_ms == start + 10_000
    first_valid = next(r for r in records if r.truth.valid and r.truth.table == "events")
    assert first_valid.truth.event_ms is not None and first_valid.truth.event_ms >= start - 600_000


def test_original_message_ids_are_unique() -> None:
    ids = [r.truth.message_id for r in stream() if r.truth.duplicate_of is None]
    assert len(ids) == len(set(ids))


# --- the cross-check: validator vs truth --------------------------------------------------------


@pytest.mark.parametrize(("seed", "count"), [(7, N), (2026, 5000)])
def test_validator_agrees_with_truth_on_every_record(seed: int, count: int) -> None:
    disagreements = []
    for record in stream(seed, count):
        truth = record.truth
        meta = SourceMeta("tidemark.events", truth.index % 4, truth.index, truth.emit_ms)
        result = validate(record.value, meta, LIMITS, truth.emit_ms)
        if isinstance(result, Accepted):
            got = (True, None, result.table, result.tenant_id, result.message_id)
            want = (truth.valid, truth.reason_code, truth.table, truth.tenant_id, truth.message_id)
        else:
            got = (False, result.reason_code)
            want = (truth.valid, truth.reason_code)
        if got != want:
            disagreements.append((truth, result[:2], record.value[:200]))
    assert not disagreements, disagreements[:5]


def test_validator_agrees_with_a_wall_clock_after_the_stream() -> None:
    now = stream()[-1].truth.emit_ms + 86_400_000  # a day later: late data stays valid
    for record in stream()[:3000]:
        result = validate(record.value, SourceMeta("t", 0, 0, now), LIMITS, now)
        assert isinstance(result, Accepted) == record.truth.valid


def test_malformed_records_cover_every_reason_code() -> None:
    codes = collections.Counter(r.truth.reason_code for r in stream() if not r.truth.valid)
    assert set(codes) == set(REASON_CODES) - {"internal_error"}
    assert min(codes.values()) >= 5


def test_some_malformed_lines_are_not_utf8() -> None:
    broken = [r.value for r in stream() if r.truth.reason_code == "bad_encoding"]
    for value in broken:
        with pytest.raises(UnicodeDecodeError):
            value.decode("utf-8")


# --- rates --------------------------------------------------------------------------------------


def rate(predicate: Any) -> float:
    return sum(1 for r in stream() if predicate(r.truth)) / N


def test_rates_on_20k_records() -> None:
    assert rate(lambda t: t.duplicate_of is not None) == pytest.approx(0.01, abs=0.002)
    assert rate(lambda t: not t.valid) == pytest.approx(0.005, abs=0.001)
    assert rate(lambda t: t.late) == pytest.approx(0.05, abs=0.005)
    cost = rate(lambda t: t.table == "cost_records" and t.duplicate_of is None)
    assert cost == pytest.approx(0.05, abs=0.005)


def test_duplicates_resend_exact_bytes_a_little_later() -> None:
    records = stream()
    for r in records:
        original_index = r.truth.duplicate_of
        if original_index is None:
            continue
        original = records[original_index]
        assert (r.key, r.value) == (original.key, original.value)
        assert original.truth.valid and original.truth.duplicate_of is None
        assert 0 < r.truth.index - original_index <= 2000


def test_late_events_lag_seconds_to_minutes_and_others_are_on_time() -> None:
    lags = []
    for truth, doc in docs(stream()):
        if truth.table != "events":
            continue
        lag = truth.emit_ms - event_ms(doc["timestamp"])
        assert lag == truth.emit_ms - truth.event_ms
        if truth.late:
            lags.append(lag)
        else:
            assert lag == 0
    assert min(lags) >= 1000 and max(lags) <= 600_000
    assert any(lag < 60_000 for lag in lags) and any(lag > 120_000 for lag in lags)


# --- realism ------------------------------------------------------------------------------------


def test_tenant_sizes_are_skewed() -> None:
    sizes = collections.Counter(r.truth.tenant_id for r in stream())
    ranked = sizes.most_common()
    assert len(ranked) >= 6
    assert ranked[0][1] > 5 * ranked[-1][1]


def test_customer_journeys() -> None:
    events = [doc for truth, doc in docs(stream()) if truth.table == "events"]
    names = collections.Counter(doc.get("event") or doc["type"] for doc in events)
    for name in (
        "page",
        "Product Viewed",
        "Product Added",
        "Order Completed",
        "Email Opened",
        "Email Clicked",
        "identify",
        "alias",
    ):
        assert names[name] > 0, name
    assert names["page"] > names["Order Completed"] > 0
    orders = [doc for doc in events if doc.get("event") == "Order Completed"]
    assert all("revenue" in doc["properties"] for doc in orders)
    emails = [doc for doc in events if str(doc.get("event")).startswith("Email")]
    assert all(doc["properties"]["campaign_id"].startswith("cmp-") for doc in emails)
    identifies = [doc for doc in events if doc["type"] == "identify"]
    assert all("@" in doc["traits"]["email"] for doc in identifies)
    assert any("phone" in doc["traits"] for doc in identifies)
    aliases = [doc for doc in events if doc["type"] == "alias"]
    assert all(doc["previous_id"] and doc["user_id"] for doc in aliases)
    formats = {type(doc["timestamp"]).__name__ for doc in events}
    assert formats == {"int", "str"}
    assert any(str(doc["timestamp"]).endswith("Z") for doc in events)
    assert any("+" in str(doc["timestamp"])[10:] for doc in events)


def test_anonymous_visitors_identify_and_devices_are_shared_and_multiple() -> None:
    events = [doc for truth, doc in docs(stream(7, N)) if truth.table == "events"]
    anonymous_then_known = set()
    users_per_device: dict[str, set[str]] = collections.defaultdict(set)
    devices_per_user: dict[str, set[str]] = collections.defaultdict(set)
    for doc in events:
        device = doc.get("context", {}).get("device_id")
        user = doc.get("user_id")
        if device and user:
            users_per_device[device].add(user)
            devices_per_user[user].add(device)
        if doc["type"] == "identify":
            anonymous_then_known.add(doc["anonymous_id"])
    anonymous_before = {
        doc["anonymous_id"] for doc in events if "user_id" not in doc and "anonymous_id" in doc
    }
    assert anonymous_then_known & anonymous_before  # browsed anonymously, then identified
    assert any(len(users) > 1 for users in users_per_device.values())  # shared devices
    assert any(len(devices) > 1 for devices in devices_per_user.values())  # multi-device users


def test_cost_records_look_like_a_cloud_bill() -> None:
    costs = [doc for truth, doc in docs(stream()) if truth.table == "cost_records"]
    services = collections.Counter(doc["service"] for doc in costs)
    assert {"AmazonEC2", "AmazonS3", "AmazonRDS"} <= set(services)
    tagged = [doc for doc in costs if doc.get("tags")]
    assert 0.6 < len(tagged) / len(costs) < 0.97  # some untagged
    keys = {key for doc in tagged for key in doc["tags"]}
    assert {"team", "env", "feature", "customer"} <= keys
    assert len({doc["account_id"] for doc in costs}) > 3
    categories = collections.Counter(doc.get("charge_category", "Usage") for doc in costs)
    assert categories["Usage"] > 0.9 * len(costs) and categories["Credit"] > 0
    for doc in costs:
        assert event_ms(doc["usage_end"]) - event_ms(doc["usage_start"]) == 3_600_000


# --- the command --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Just `tidemark gen`, registered the way tidemark.cli registers it."""
    parser = argparse.ArgumentParser(prog="tidemark")
    gen.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_gen_command_writes_binary_lines_and_truth(tmp_path: Path) -> None:
    out, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    argv = ["gen", "--seed", "7", "--count", "3000", "--out", str(out), "--truth", str(truth)]
    args = build_parser().parse_args([*argv, "--start", "2026-11-01T00:00:00Z"])
    assert args.func(args) == 0
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3001
    expected = stream(7, 3000)
    assert lines[:-1] == [r.value for r in expected]
    truths = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    assert [t["key"].encode() for t in truths] == [r.key for r in expected]
    assert truths[5] == {"key": expected[5].key.decode(), **expected[5].truth._asdict()}


def test_gen_command_rejects_a_zone_less_start() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["gen", "--seed", "1", "--count", "1", "--out", "x", "--start", "2026-11-01T00:00"]
        )


def test_print_generator_throughput() -> None:
    started = time.process_time()
    count = sum(1 for _ in generate(99, 50_000))
    elapsed = time.process_time() - started
    print(f"\ngenerate(): {count / elapsed:,.0f} records/s (CPU time)")


def test_default_start_is_2026_11_01() -> None:
    assert datetime.fromtimestamp(DEFAULT_START_MS / 1000, UTC) == datetime(2026, 11, 1, tzinfo=UTC)
