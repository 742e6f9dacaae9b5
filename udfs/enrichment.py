"""Enrich a validated `events` row with product, campaign and account attributes, as of a time.

Why as of a time (normally the event time) rather than "now": an order is described by the
price list and campaign set-up that were live when it happened, so a replay of old events
gives the same answers as the first run did (see `udfs.dimensions` for the type-2 tables).

What is added to the row (all plain strings, lists aligned with row["product_ids"]):
  product_names, product_categories   one entry per product id
  campaign_name, campaign_channel     "" when the event has no campaign_id
  account_plan, account_region        the tenant's account
A lookup that finds no version valid at the time (unknown key, a version that only starts
later, or a tombstone) gives the literal "unknown" and is counted: `enrich_event` returns the
number of such misses so the job can expose them as a metric. An unknown dimension value is
never a reason to drop or dead-letter an event.

Late-arriving dimension rows: enrichment happens once, when the event is processed, with the
versions known at that moment. A dimension version that arrives later (even with a valid_from
in the past) only affects events processed after it arrives; rows already written are not
rewritten. A backfill or replay re-enriches with whatever versions are known then. So publish
a dimension version (with its valid_from before the events that need it) before those events
are produced; otherwise they keep "unknown" or the previous version.

Cost: one dict probe and one bisect per lookup, no copies of the attribute dicts; the only
allocations are the two product lists and, per product, its key string.
"""

from __future__ import annotations

from typing import Any

from udfs.dimensions import KEY_SEPARATOR, Dimensions

UNKNOWN = "unknown"
ENRICHED_COLUMNS = (
    "product_names",
    "product_categories",
    "campaign_name",
    "campaign_channel",
    "account_plan",
    "account_region",
)


def enrich_event(row: dict[str, Any], dims: Dimensions, at_ms: int) -> int:
    """Add the ENRICHED_COLUMNS to a validated events row, as of at_ms (epoch millis).

    Returns the number of lookups that found nothing (each missing product, a missing campaign
    when campaign_id is set, a missing account), each of which reads "unknown".
    """
    tenant_id = row["tenant_id"]
    missing = 0

    names: list[str] = []
    categories: list[str] = []
    product_ids = row["product_ids"]
    if product_ids:
        lookup = dims.products.lookup
        prefix = tenant_id + KEY_SEPARATOR
        for sku in product_ids:
            product = lookup(prefix + sku, at_ms)
            if product is None:
                names.append(UNKNOWN)
                categories.append(UNKNOWN)
                missing += 1
            else:
                names.append(product["name"])
                categories.append(product["category"])
    row["product_names"] = names
    row["product_categories"] = categories

    campaign_id = row["campaign_id"]
    if campaign_id:
        campaign = dims.campaigns.lookup(tenant_id + KEY_SEPARATOR + campaign_id, at_ms)
        if campaign is None:
            row["campaign_name"] = row["campaign_channel"] = UNKNOWN
            missing += 1
        else:
            row["campaign_name"] = campaign["name"]
            row["campaign_channel"] = campaign["channel"]
    else:
        row["campaign_name"] = row["campaign_channel"] = ""

    account = dims.accounts.lookup(tenant_id, at_ms)
    if account is None:
        row["account_plan"] = row["account_region"] = UNKNOWN
        missing += 1
    else:
        row["account_plan"] = account["plan"]
        row["account_region"] = account["region"]
    return missing
