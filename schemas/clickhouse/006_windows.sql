-- Windowed aggregates (issue 4): the window stage folds counted rows into panes (pane = gcd of
-- the window specs' slides, 10 s by default) and writes each changed pane as an absolute row;
-- windows are never stored, the views below assemble them from panes.
--
-- Every pane / progress table is ReplacingMergeTree(version) on a deterministic key, with a
-- version that only grows as rows are folded in (rows folded, or the watermark in ms), so a
-- partial pane re-emitted every second, a late row's correction and a replay after a failure
-- all converge to the one final value; readers go through FINAL (the views do).
-- pane_start is in every pane key (and the partition is its month), so a filter on the pane
-- range prunes parts and granules and never splits the versions of one pane.

CREATE TABLE IF NOT EXISTS {database}.cost_panes
(
    tenant_id      LowCardinality(String),
    team           LowCardinality(String),
    feature        LowCardinality(String),
    customer       LowCardinality(String),
    service        LowCardinality(String),
    currency       LowCardinality(String),
    pane_start     DateTime64(3, 'UTC'),
    billed_cost    Decimal(38, 12),
    effective_cost Decimal(38, 12),
    usage_quantity Decimal(38, 12),
    allocations    UInt64,
    version        UInt64,
    updated_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(pane_start)
ORDER BY (tenant_id, pane_start, currency, team, feature, customer, service)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {database}.engagement_panes
(
    tenant_id   LowCardinality(String),
    campaign_id String,
    event_type  LowCardinality(String),
    pane_start  DateTime64(3, 'UTC'),
    events      UInt64,
    revenue     Decimal(38, 6),
    profiles    Array(String),
    version     UInt64,
    updated_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(pane_start)
ORDER BY (tenant_id, pane_start, campaign_id, event_type)
SETTINGS non_replicated_deduplication_window = 10000;

-- Keyed by profile before time: the profile page reads one profile's panes.
CREATE TABLE IF NOT EXISTS {database}.profile_panes
(
    tenant_id     LowCardinality(String),
    profile_id    String,
    event_type    LowCardinality(String),
    pane_start    DateTime64(3, 'UTC'),
    events        UInt64,
    revenue       Decimal(38, 6),
    last_event_at DateTime64(3, 'UTC'),
    version       UInt64,
    updated_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(pane_start)
ORDER BY (tenant_id, profile_id, pane_start, event_type)
SETTINGS non_replicated_deduplication_window = 10000;

-- Rows older than watermark - allowed lateness: counted nowhere else, kept here with why.
-- A replay judges a row identically (per-tenant clocks in checkpointed state), so it
-- re-inserts the same key and the copies collapse.
CREATE TABLE IF NOT EXISTS {database}.late_events
(
    tenant_id        LowCardinality(String),
    family           LowCardinality(String),
    message_id       String,
    allocation_index UInt16,
    event_time       DateTime64(3, 'UTC'),
    watermark        DateTime64(3, 'UTC'),
    lateness_ms      Int64,
    reason           LowCardinality(String),
    payload          String CODEC(ZSTD(3)),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant_id, family, message_id, allocation_index)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS {database}.late_events_current AS
SELECT * FROM {database}.late_events FINAL;

-- Each (tenant, family)'s watermark and clock; version = the clock in ms. updated_at is the
-- wall time the row arrived, which is what the idle rule measures.
CREATE TABLE IF NOT EXISTS {database}.window_progress
(
    tenant_id   LowCardinality(String),
    family      LowCardinality(String),
    watermark   DateTime64(3, 'UTC'),
    event_clock DateTime64(3, 'UTC'),
    version     UInt64,
    updated_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, family)
SETTINGS non_replicated_deduplication_window = 10000;

-- The job's window specs, replaced whole at submission; the views read them, so a spec added
-- to the config shows up in every view without a migration.
CREATE TABLE IF NOT EXISTS {database}.window_specs
(
    name                String,
    size_ms             UInt64,
    slide_ms            UInt64,
    pane_ms             UInt64,
    allowed_lateness_ms UInt64,
    idle_timeout_ms     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY name;

-- Per (tenant, family, window spec): how far windows are final. final_until = the watermark,
-- or, once the tenant-family has sent no progress row for idle_timeout_ms of wall time, the
-- family's highest watermark over all tenants (a quiet tenant's windows still close).
-- latest_final_end = the end of the newest final window of the spec (ends are multiples of
-- the slide). The dashboards anchor "the last hour" here, in event time, not at now(): a
-- lagging pipeline or a replay of old data then shows the newest complete numbers, not an
-- empty or half-filled window. argMax by version rather than FINAL: the idle rule needs the
-- newest updated_at over every row, including re-sent ones of an unchanged version.
-- With window_specs empty (no job submitted yet) there are no frontiers and no windows.
CREATE VIEW IF NOT EXISTS {database}.window_frontier AS
SELECT
    p.tenant_id AS tenant_id,
    p.family AS family,
    s.name AS window,
    s.size_ms AS size_ms,
    s.slide_ms AS slide_ms,
    p.watermark AS watermark,
    p.event_clock AS event_clock,
    p.last_progress_at AS last_progress_at,
    toBool(toUnixTimestamp64Milli(now64(3)) - toUnixTimestamp64Milli(p.last_progress_at)
        >= toInt64(s.idle_timeout_ms)) AS idle,
    if(idle, greatest(p.watermark, m.family_watermark), p.watermark) AS final_until,
    fromUnixTimestamp64Milli(
        toInt64(intDiv(toUnixTimestamp64Milli(final_until), s.slide_ms) * s.slide_ms), 'UTC'
    ) AS latest_final_end
FROM
(
    SELECT tenant_id, family,
           argMax(watermark, version) AS watermark,
           argMax(event_clock, version) AS event_clock,
           max(updated_at) AS last_progress_at
    FROM {database}.window_progress
    GROUP BY tenant_id, family
) AS p
INNER JOIN
(
    SELECT family, max(watermark) AS family_watermark
    FROM {database}.window_progress
    GROUP BY family
) AS m ON m.family = p.family
CROSS JOIN (SELECT * FROM {database}.window_specs FINAL) AS s;

-- Windows from panes. A pane starting at P lies in the size/slide windows of a spec that
-- start at (floor(P / slide) - k) * slide, k = 0 .. size/slide - 1: each final pane row is
-- repeated once per window it belongs to (ARRAY JOIN against the tiny spec table) and summed
-- per window. is_final: window_end <= the tenant-family's final_until (window_frontier).
-- One row per (window, tenant, key..., window_start).
--
-- Three shapes per family:
-- - *_windows_between(since, until): the windows lying inside [since, until). Only the panes
--   in that range are read before the fan-out, so a dashboard's time range costs what it
--   covers, not the whole table. (Arguments may be expressions: since = now64(3) - INTERVAL
--   1 HOUR.)
-- - *_windows: the same over all time (ad-hoc analysis; reads every pane).
-- - *_windows_latest: each tenant's newest final window of every spec ("the last hour"),
--   summed straight from the panes it covers, with no fan-out at all.

-- Cost: the job already wrote the rollups ('*' rows), so every key is a plain group.
CREATE VIEW IF NOT EXISTS {database}.cost_windows_between AS
SELECT w.*, toBool(w.window_end <= f.final_until) AS is_final
FROM
(
    SELECT
        s.name AS window,
        p.tenant_id AS tenant_id, p.team AS team, p.feature AS feature,
        p.customer AS customer, p.service AS service, p.currency AS currency,
        fromUnixTimestamp64Milli(toInt64(
            (intDiv(toUnixTimestamp64Milli(p.pane_start), s.slide_ms) - k) * s.slide_ms
        ), 'UTC') AS window_start,
        window_start + toIntervalMillisecond(s.size_ms) AS window_end,
        sum(p.billed_cost) AS billed_cost,
        sum(p.effective_cost) AS effective_cost,
        sum(p.usage_quantity) AS usage_quantity,
        sum(p.allocations) AS allocations
    FROM
    (
        SELECT * FROM {database}.cost_panes FINAL
        WHERE pane_start >= {since:DateTime64(3, 'UTC')}
          AND pane_start < {until:DateTime64(3, 'UTC')}
    ) AS p
    CROSS JOIN (SELECT * FROM {database}.window_specs FINAL) AS s
    ARRAY JOIN range(intDiv(s.size_ms, s.slide_ms)) AS k
    WHERE window_start >= {since:DateTime64(3, 'UTC')}
      AND window_end <= {until:DateTime64(3, 'UTC')}
    GROUP BY window, tenant_id, team, feature, customer, service, currency, window_start,
             window_end
) AS w
LEFT JOIN {database}.window_frontier AS f
    ON f.tenant_id = w.tenant_id AND f.family = 'cost' AND f.window = w.window;

CREATE VIEW IF NOT EXISTS {database}.cost_windows AS
SELECT * FROM {database}.cost_windows_between(
    since = '1900-01-01 00:00:00', until = '2299-12-31 23:59:59.999'
);

CREATE VIEW IF NOT EXISTS {database}.cost_windows_latest AS
SELECT
    f.window AS window,
    p.tenant_id AS tenant_id, p.team AS team, p.feature AS feature,
    p.customer AS customer, p.service AS service, p.currency AS currency,
    f.latest_final_end - toIntervalMillisecond(f.size_ms) AS window_start,
    f.latest_final_end AS window_end,
    sum(p.billed_cost) AS billed_cost,
    sum(p.effective_cost) AS effective_cost,
    sum(p.usage_quantity) AS usage_quantity,
    sum(p.allocations) AS allocations,
    true AS is_final
FROM
(
    SELECT * FROM {database}.cost_panes FINAL
    WHERE pane_start >= (
        SELECT min(latest_final_end - toIntervalMillisecond(size_ms))
        FROM {database}.window_frontier WHERE family = 'cost'
    )
) AS p
INNER JOIN (SELECT * FROM {database}.window_frontier WHERE family = 'cost') AS f
    ON f.tenant_id = p.tenant_id
WHERE p.pane_start >= window_start AND p.pane_start < window_end
GROUP BY window, tenant_id, team, feature, customer, service, currency, window_start,
         window_end;

-- Engagement per (campaign, event type), plus a row per campaign with event_type '*':
-- unique profiles do not add up across event types, so that rollup is computed here.
-- unique_profiles is exact: the distinct ids of the union of the panes' arrays.
CREATE VIEW IF NOT EXISTS {database}.engagement_windows_between AS
SELECT w.*, toBool(w.window_end <= f.final_until) AS is_final
FROM
(
    SELECT
        s.name AS window,
        p.tenant_id AS tenant_id, p.campaign_id AS campaign_id,
        if(grouping(p.event_type) = 1, '*', p.event_type) AS event_type,
        fromUnixTimestamp64Milli(toInt64(
            (intDiv(toUnixTimestamp64Milli(p.pane_start), s.slide_ms) - k) * s.slide_ms
        ), 'UTC') AS window_start,
        window_start + toIntervalMillisecond(s.size_ms) AS window_end,
        sum(p.events) AS events,
        uniqExactArray(p.profiles) AS unique_profiles,
        sum(p.revenue) AS revenue
    FROM
    (
        SELECT * FROM {database}.engagement_panes FINAL
        WHERE pane_start >= {since:DateTime64(3, 'UTC')}
          AND pane_start < {until:DateTime64(3, 'UTC')}
    ) AS p
    CROSS JOIN (SELECT * FROM {database}.window_specs FINAL) AS s
    ARRAY JOIN range(intDiv(s.size_ms, s.slide_ms)) AS k
    WHERE window_start >= {since:DateTime64(3, 'UTC')}
      AND window_end <= {until:DateTime64(3, 'UTC')}
    GROUP BY GROUPING SETS (
        (window, p.tenant_id, p.campaign_id, p.event_type, window_start, window_end),
        (window, p.tenant_id, p.campaign_id, window_start, window_end)
    )
) AS w
LEFT JOIN {database}.window_frontier AS f
    ON f.tenant_id = w.tenant_id AND f.family = 'events' AND f.window = w.window;

CREATE VIEW IF NOT EXISTS {database}.engagement_windows AS
SELECT * FROM {database}.engagement_windows_between(
    since = '1900-01-01 00:00:00', until = '2299-12-31 23:59:59.999'
);

CREATE VIEW IF NOT EXISTS {database}.engagement_windows_latest AS
SELECT
    f.window AS window,
    p.tenant_id AS tenant_id, p.campaign_id AS campaign_id,
    if(grouping(p.event_type) = 1, '*', p.event_type) AS event_type,
    f.latest_final_end - toIntervalMillisecond(f.size_ms) AS window_start,
    f.latest_final_end AS window_end,
    sum(p.events) AS events,
    uniqExactArray(p.profiles) AS unique_profiles,
    sum(p.revenue) AS revenue,
    true AS is_final
FROM
(
    SELECT * FROM {database}.engagement_panes FINAL
    WHERE pane_start >= (
        SELECT min(latest_final_end - toIntervalMillisecond(size_ms))
        FROM {database}.window_frontier WHERE family = 'events'
    )
) AS p
INNER JOIN (SELECT * FROM {database}.window_frontier WHERE family = 'events') AS f
    ON f.tenant_id = p.tenant_id
WHERE p.pane_start >= window_start AND p.pane_start < window_end
GROUP BY GROUPING SETS (
    (f.window, p.tenant_id, p.campaign_id, p.event_type, window_start, window_end),
    (f.window, p.tenant_id, p.campaign_id, window_start, window_end)
);

-- Per (profile, event type), plus the profile's total with event_type '*'.
CREATE VIEW IF NOT EXISTS {database}.profile_windows_between AS
SELECT w.*, toBool(w.window_end <= f.final_until) AS is_final
FROM
(
    SELECT
        s.name AS window,
        p.tenant_id AS tenant_id, p.profile_id AS profile_id,
        if(grouping(p.event_type) = 1, '*', p.event_type) AS event_type,
        fromUnixTimestamp64Milli(toInt64(
            (intDiv(toUnixTimestamp64Milli(p.pane_start), s.slide_ms) - k) * s.slide_ms
        ), 'UTC') AS window_start,
        window_start + toIntervalMillisecond(s.size_ms) AS window_end,
        sum(p.events) AS events,
        sum(p.revenue) AS revenue,
        max(p.last_event_at) AS last_event_at
    FROM
    (
        SELECT * FROM {database}.profile_panes FINAL
        WHERE pane_start >= {since:DateTime64(3, 'UTC')}
          AND pane_start < {until:DateTime64(3, 'UTC')}
    ) AS p
    CROSS JOIN (SELECT * FROM {database}.window_specs FINAL) AS s
    ARRAY JOIN range(intDiv(s.size_ms, s.slide_ms)) AS k
    WHERE window_start >= {since:DateTime64(3, 'UTC')}
      AND window_end <= {until:DateTime64(3, 'UTC')}
    GROUP BY GROUPING SETS (
        (window, p.tenant_id, p.profile_id, p.event_type, window_start, window_end),
        (window, p.tenant_id, p.profile_id, window_start, window_end)
    )
) AS w
LEFT JOIN {database}.window_frontier AS f
    ON f.tenant_id = w.tenant_id AND f.family = 'events' AND f.window = w.window;

CREATE VIEW IF NOT EXISTS {database}.profile_windows AS
SELECT * FROM {database}.profile_windows_between(
    since = '1900-01-01 00:00:00', until = '2299-12-31 23:59:59.999'
);

-- Cost per UTC day (tumbling, straight from the panes: each pane is in one day), for "today"
-- and daily trends; is_final once the whole day is behind the tenant's final_until. Days
-- still open include the partial panes written so far.
CREATE VIEW IF NOT EXISTS {database}.cost_days AS
SELECT d.*, toBool(toDateTime64(d.day + 1, 3, 'UTC') <= f.final_until) AS is_final
FROM
(
    SELECT tenant_id, team, feature, customer, service, currency, toDate(pane_start) AS day,
           sum(billed_cost) AS billed_cost,
           sum(effective_cost) AS effective_cost,
           sum(usage_quantity) AS usage_quantity,
           sum(allocations) AS allocations
    FROM {database}.cost_panes FINAL
    GROUP BY tenant_id, team, feature, customer, service, currency, day
) AS d
LEFT JOIN
(
    SELECT tenant_id, max(final_until) AS final_until
    FROM {database}.window_frontier WHERE family = 'cost'
    GROUP BY tenant_id
) AS f ON f.tenant_id = d.tenant_id;
