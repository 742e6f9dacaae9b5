"""A FOCUS cost file as a new user loads it, end to end on the real local stack.

The FinOps Foundation sample excerpt (tests/data), in its published order (no time order,
zone-less times, NULL cells, negative Azure Usage rows), goes `produce --focus` -> Kafka -> the
ingest job on the standalone cluster -> ClickHouse. Every row must be a cost record (no dead
letter), the live windows send the rows behind the stream's clock to late_events as their
lateness rules say, and cost_hourly / cost_daily must still hold the whole file, by charge
period, with sums equal to the expectation computed from the CSV (tests/test_cost_history.py).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests import ingest_flow
from tests.support import wait_until
from tests.test_cost_history import EXCERPT, expected_from_csv, stored
from tidemark import flink_rest
from tidemark.produce import focus_records, produce
from tidemark.stack import flink

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def test_focus_sample_lands_fully_in_cost_history_despite_lateness(stack_cfg) -> None:
    case = ingest_flow.new_case(stack_cfg, seed=1, count=0)
    assert produce(case.cfg, focus_records(EXCERPT, "acme")).records == 41
    job_id = ingest_flow.start_job(case)
    client = ingest_flow.client(case.cfg)
    client.database = case.cfg.clickhouse.database
    want_hourly = expected_from_csv("hour", team_tag=None)  # no attribution rules: unallocated
    try:

        def history_complete() -> bool:
            state = flink_rest.job_state(flink.rest_url(case.cfg), job_id)
            assert state not in flink_rest.TERMINAL_STATES, state
            return stored(client, "hour") == want_hourly

        wait_until(history_complete, 240, "cost_hourly to hold the whole file")
        assert stored(client, "day") == expected_from_csv("day", team_tag=None)
        counts = ingest_flow.table_counts(case.cfg)
        assert counts == {"events": 0, "cost_records": 41, "dead_letters": 0}
        late = client.command("SELECT count() FROM late_events_current WHERE family = 'cost'")
        assert int(late) > 0, "out of time order: the live windows must see late rows"
        kept = client.query(
            "SELECT provider, count() FROM cost_records FINAL GROUP BY provider ORDER BY provider"
        ).result_rows
        assert kept == [("AWS", 22), ("Microsoft", 15), ("Oracle", 4)]
        negative = client.command(
            "SELECT count() FROM cost_records FINAL"
            " WHERE charge_category = 'Usage' AND billed_cost < 0"
        )
        assert int(negative) == 12
        assert int(client.command("SELECT countIf(resource_id = 'NULL') FROM cost_records")) == 0
        total = sum((b for b, _, _ in want_hourly.values()), Decimal(0))
        got = client.query("SELECT sum(billed_cost) FROM cost_daily_current").result_rows[0][0]
        assert got == total
    finally:
        client.close()
        flink_rest.cancel(flink.rest_url(case.cfg), job_id)
