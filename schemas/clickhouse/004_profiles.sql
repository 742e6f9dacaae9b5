-- Identity resolution (issue 3): the profile each event resolved to, enrichment columns, and
-- the identity graph as the job's state last held it.
--
-- Every identity table is ReplacingMergeTree(version) on a deterministic key. `version` is the
-- tenant's event sequence number at the write (kept in Flink state), so the same logical
-- state always carries the same version: a replay after a failure, even batched differently,
-- re-inserts rows that collapse, and FINAL / the *_current views return exactly one current
-- row per key.

ALTER TABLE {database}.events
    ADD COLUMN IF NOT EXISTS profile_id String AFTER message_id,
    ADD COLUMN IF NOT EXISTS product_names Array(String) AFTER product_ids,
    ADD COLUMN IF NOT EXISTS product_categories Array(LowCardinality(String)) AFTER product_names,
    ADD COLUMN IF NOT EXISTS campaign_name String AFTER campaign_id,
    ADD COLUMN IF NOT EXISTS campaign_channel LowCardinality(String) AFTER campaign_name,
    ADD COLUMN IF NOT EXISTS account_plan LowCardinality(String) AFTER campaign_channel,
    ADD COLUMN IF NOT EXISTS account_region LowCardinality(String) AFTER account_plan;

-- One row per profile. A profile that lost a merge keeps its row with merged_into set.
CREATE TABLE IF NOT EXISTS {database}.profiles
(
    tenant_id    LowCardinality(String),
    profile_id   String,
    identifiers  Map(String, Array(String)),
    first_seen   DateTime64(3, 'UTC'),
    last_seen    DateTime64(3, 'UTC'),
    merges       UInt32,
    merged_into  String,
    version      UInt64,
    updated_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, profile_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Live profiles only (merged ones are reachable through profile_aliases).
CREATE VIEW IF NOT EXISTS {database}.profiles_current AS
SELECT * FROM {database}.profiles FINAL WHERE merged_into = '';

-- identifier -> profile. An identifier belongs to exactly one profile; a merge re-points it.
CREATE TABLE IF NOT EXISTS {database}.identity_links
(
    tenant_id   LowCardinality(String),
    id_type     LowCardinality(String),
    id_value    String,
    profile_id  String,
    version     UInt64,
    updated_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, id_type, id_value)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS {database}.identity_links_current AS
SELECT * FROM {database}.identity_links FINAL;

-- One row per merge: the loser can lose only once (it is never live again).
CREATE TABLE IF NOT EXISTS {database}.identity_merges
(
    tenant_id   LowCardinality(String),
    winner      String,
    loser       String,
    reason      String,
    message_id  String,
    event_time  DateTime64(3, 'UTC'),
    rekeyed     Array(String),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, loser)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS {database}.identity_merges_current AS
SELECT * FROM {database}.identity_merges FINAL;

-- Every profile id that ever existed -> the live profile it resolves to now (transitively:
-- when B merged into A and A later into C, both A and B point at C).
CREATE TABLE IF NOT EXISTS {database}.profile_aliases
(
    tenant_id          LowCardinality(String),
    profile_id         String,
    current_profile_id String,
    version            UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, profile_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Events on the profile they belong to now: an event written before the identify call that
-- linked its anonymous id to a known person carries the anonymous profile's id; the merge
-- recorded in profile_aliases moves it to the person's profile here, with no rewrite.
CREATE VIEW IF NOT EXISTS {database}.events_resolved AS
SELECT e.*,
       if(a.current_profile_id = '', e.profile_id, a.current_profile_id) AS resolved_profile_id
FROM {database}.events AS e FINAL
LEFT JOIN (
    SELECT tenant_id, profile_id, argMax(current_profile_id, version) AS current_profile_id
    FROM {database}.profile_aliases
    GROUP BY tenant_id, profile_id
) AS a ON e.tenant_id = a.tenant_id AND e.profile_id = a.profile_id;
