"""Sample dimension and attribution-rule files that match `tidemark gen`'s synthetic world.

Why: enrichment and cost attribution need reference data about exactly the skus, campaigns,
accounts and resources the generator emits, and the demo needs that data to exercise the
interesting cases: a dimension version that changes mid-stream, keys that are missing (so
"unknown" shows up), shared costs that must be split, and untagged cost that stays
unallocated. The catalog is rebuilt from the generator itself for the same seed, so the files
can never drift from the stream; the choices made here (which skus change, what is left out)
use their own seeded random stream, so the generator's output is untouched.

Files written (valid_from of first versions: start - 1 day, so even the first hour's cost
records, whose usage_start is an hour before the stream clock, find them):

  products.csv           tenant_id, sku, name, category, price, valid_from
                         every sku; ~10% get a second version at start + change_after with a
                         markdown price (2 of 3) or category "clearance" (1 of 3)
  campaigns.parquet      tenant_id, campaign_id, name, channel, valid_from (int64 epoch millis)
                         every campaign but one per tenant
  accounts.csv           tenant_id, plan, region, valid_from
                         every tenant but one; one tenant upgrades its plan at the change time
  attribution_rules.csv  rule_id, tenant_id, precedence, match_field, match_value, team,
                         feature, customer, cost_center, environment, split, valid_from
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from tidemark.gen import DEFAULT_EVENTS_PER_SECOND, DEFAULT_START_MS, _Generator, _parse_start
from udfs.attribution import RULE_COLUMNS

DEFAULT_CHANGE_AFTER_SECONDS = 100  # halfway through `tidemark demo`'s 200,000 records at 1000/s
_DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Campaign slug (the generator's cmp-2611-<slug>-<nn>) -> marketing channel.
CAMPAIGN_CHANNELS = {
    "welcome": "email",
    "winback": "email",
    "restock": "push",
    "black-friday": "paid_social",
    "cyber-monday": "paid_search",
    "holiday-gift": "display",
}
# Team (the generator's `team` tag) -> cost center.
TEAM_COST_CENTERS = {
    "checkout": "cc-commerce",
    "search": "cc-commerce",
    "growth": "cc-marketing",
    "data": "cc-data",
    "ml": "cc-data",
    "platform": "cc-platform",
}
_CURRENCY_REGIONS = {"USD": "us-east", "EUR": "eu-central", "GBP": "eu-west", "JPY": "ap-northeast"}


class DimensionFiles(NamedTuple):
    """What was written, and the deliberate gaps and changes (the tests' answer key)."""

    paths: dict[str, Path]  # products, campaigns, accounts, attribution_rules -> file
    changed_skus: tuple[tuple[str, str], ...]  # (tenant_id, sku) with a second version
    missing_campaigns: tuple[tuple[str, str], ...]  # (tenant_id, campaign_id) left out
    missing_account: str  # the tenant without an accounts row
    change_ms: int  # valid_from of every second version


def _iso(ms: int) -> str:
    """Epoch millis as ISO-8601 UTC with a 'Z' (the form people write in a CSV)."""
    moment = _EPOCH + timedelta(milliseconds=ms)  # integer arithmetic: no float rounding
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _price(cents: int, per_unit: int) -> str:
    """Minor units as a decimal string in the currency's major unit (JPY has no minor unit)."""
    if per_unit == 1:
        return str(cents)
    return f"{cents // 100}.{cents % 100:02d}"


def _markdown(cents: int) -> int:
    """About 25% off, ending in 99 like the generator's price points, and always lower."""
    marked = (cents * 3 // 4) // 100 * 100 + 99
    return marked if marked < cents else marked - 100


def _campaign_slug(campaign_id: str) -> str:
    """cmp-2611-black-friday-42 -> black-friday."""
    return campaign_id.split("-", 2)[2].rsplit("-", 1)[0]


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_dimension_files(
    directory: str | Path,
    seed: int,
    start_ms: int = DEFAULT_START_MS,
    change_after_ms: int = DEFAULT_CHANGE_AFTER_SECONDS * 1000,
) -> DimensionFiles:
    """Write the four sample files for the generator world of `seed` into directory."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    world = _Generator(seed, start_ms, DEFAULT_EVENTS_PER_SECOND)
    rng = Random(f"tidemark-dimensions-{seed}")  # a string seed is stable across runs
    base_ms = start_ms - _DAY_MS
    change_ms = start_ms + change_after_ms
    base, changed = _iso(base_ms), _iso(change_ms)

    # products: every sku, ~10% with a second version
    product_rows: list[dict[str, Any]] = []
    changed_skus: list[tuple[str, str]] = []
    for tenant in world.tenants:
        skus = {sku: (name, cents, category) for sku, name, cents, category in tenant.products}
        picked = set(rng.sample(sorted(skus), max(1, round(len(skus) / 10))))
        for sku, (name, cents, category) in skus.items():
            row = {"tenant_id": tenant.name, "sku": sku, "name": name, "category": category}
            product_rows.append(
                {**row, "price": _price(cents, tenant.per_unit), "valid_from": base}
            )
            if sku in picked:
                if rng.random() < 2 / 3:
                    row["price"] = _price(_markdown(cents), tenant.per_unit)
                else:
                    row["price"] = _price(cents, tenant.per_unit)
                    row["category"] = "clearance"
                product_rows.append({**row, "valid_from": changed})
                changed_skus.append((tenant.name, sku))
    paths = {"products": folder / "products.csv"}
    _write_csv(
        paths["products"],
        ("tenant_id", "sku", "name", "category", "price", "valid_from"),
        product_rows,
    )

    # campaigns: all but one per tenant, so enrichment meets an unknown campaign
    campaign_rows: dict[str, list[Any]] = {
        column: [] for column in ("tenant_id", "campaign_id", "name", "channel", "valid_from")
    }
    missing_campaigns: list[tuple[str, str]] = []
    for tenant in world.tenants:
        left_out = rng.choice(tenant.campaigns)
        missing_campaigns.append((tenant.name, left_out))
        for campaign_id in tenant.campaigns:
            if campaign_id == left_out:
                continue
            slug = _campaign_slug(campaign_id)
            campaign_rows["tenant_id"].append(tenant.name)
            campaign_rows["campaign_id"].append(campaign_id)
            campaign_rows["name"].append(f"{slug.replace('-', ' ').title()} 2026")
            campaign_rows["channel"].append(CAMPAIGN_CHANNELS.get(slug, "other"))
            campaign_rows["valid_from"].append(base_ms)
    paths["campaigns"] = folder / "campaigns.parquet"
    schema = pa.schema(
        [
            (column, pa.int64() if column == "valid_from" else pa.string())
            for column in campaign_rows
        ]
    )
    pq.write_table(pa.table(campaign_rows, schema=schema), paths["campaigns"])

    # accounts: every tenant but one; plan by catalog size, one upgrade at the change time
    missing_account = rng.choice(world.tenants).name
    account_rows: list[dict[str, Any]] = []
    upgraded = False
    for tenant in world.tenants:
        if tenant.name == missing_account:
            continue
        size = len(tenant.products)
        plan = "enterprise" if size >= 150 else "growth" if size >= 60 else "starter"
        row = {
            "tenant_id": tenant.name,
            "plan": plan,
            "region": _CURRENCY_REGIONS.get(tenant.currency, "us-east"),
        }
        account_rows.append({**row, "valid_from": base})
        if plan == "growth" and not upgraded:
            account_rows.append({**row, "plan": "enterprise", "valid_from": changed})
            upgraded = True
    paths["accounts"] = folder / "accounts.csv"
    _write_csv(paths["accounts"], ("tenant_id", "plan", "region", "valid_from"), account_rows)

    paths["attribution_rules"] = folder / "attribution_rules.csv"
    _write_csv(paths["attribution_rules"], RULE_COLUMNS, _rules(world, rng, base, changed))
    return DimensionFiles(
        paths, tuple(changed_skus), tuple(missing_campaigns), missing_account, change_ms
    )


def _rules(world: _Generator, rng: Random, base: str, changed: str) -> list[dict[str, Any]]:
    """A realistic rule set: tags first, cost centers per team, a shared CDN split evenly, a
    pinned database, and one shared account per tenant split by weights; untagged cost no
    rule claims stays unallocated."""
    rules: list[dict[str, Any]] = []

    def rule(
        rule_id: str,
        tenant_id: str,
        precedence: int,
        field: str,
        value: str,
        valid_from: str = base,
        **targets: str,
    ) -> None:
        row = dict.fromkeys(RULE_COLUMNS, "")
        row.update(
            rule_id=rule_id,
            tenant_id=tenant_id,
            precedence=precedence,
            match_field=field,
            match_value=value,
            valid_from=valid_from,
            **targets,
        )
        rules.append(row)

    # The CDN serves every team: split evenly whatever its tags say (precedence before tags).
    rule(
        "cdn-shared",
        "*",
        5,
        "service",
        "AmazonCloudFront",
        team="shared-cdn",
        split="even:checkout|search|growth",
        cost_center="cc-shared",
        environment="{tag:env}",
    )
    rule("tag-team", "*", 10, "tag:team", "*", team="{value}")
    rule("tag-feature", "*", 10, "tag:feature", "*", feature="{value}")
    rule("tag-customer", "*", 10, "tag:customer", "*", customer="{value}")
    rule("tag-env", "*", 10, "tag:env", "*", environment="{value}")
    teams = sorted(
        {res.tags["team"] for t in world.tenants for res in t.resources if res.tags}
        | set(TEAM_COST_CENTERS)
    )
    for team in teams:
        rule(
            f"cc-{team}",
            "*",
            20,
            "tag:team",
            team,
            cost_center=TEAM_COST_CENTERS.get(team, f"cc-{team}"),
        )
    # A reorganisation mid-stream: ml gets its own cost center (a second version of cc-ml).
    rule("cc-ml", "*", 20, "tag:team", "ml", valid_from=changed, cost_center="cc-ml")

    for tenant in world.tenants:
        # The main database is the data team's, however it is tagged.
        database = next((r for r in tenant.resources if r.service == "AmazonRDS"), None)
        if database is not None:
            rule(
                f"{tenant.name}-warehouse-db",
                tenant.name,
                1,
                "resource_id",
                database.resource_id,
                team="data",
                feature="reporting",
                cost_center="cc-data",
            )
        # One shared account: what no team tag claims there is split by weights.
        accounts = sorted({r.account for r in tenant.resources})
        account = rng.choice(accounts)
        sharers = rng.sample(sorted(TEAM_COST_CENTERS), 2 + int(rng.random() * 2))
        weights = "|".join(f"{team}={1 + int(rng.random() * 4)}" for team in sharers)
        rule(
            f"{tenant.name}-shared-account",
            tenant.name,
            50,
            "account_id",
            account,
            team="shared-account",
            cost_center="cc-shared",
            split=f"weights:{weights}",
        )
    return rules


# --- the `tidemark gen-dimensions` command ------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    written = write_dimension_files(
        args.dir, args.seed, args.start, args.change_after_seconds * 1000
    )
    for name, path in written.paths.items():
        print(f"tidemark gen-dimensions: wrote {name} to {path}", file=sys.stderr)
    print(
        f"tidemark gen-dimensions: {len(written.changed_skus)} skus change at"
        f" {_iso(written.change_ms)}; left out: {len(written.missing_campaigns)} campaigns"
        f" and the account of {written.missing_account}",
        file=sys.stderr,
    )
    return 0


def register(subparsers: Any) -> None:
    """Add `tidemark gen-dimensions` to the CLI."""
    parser = subparsers.add_parser(
        "gen-dimensions",
        help="write sample dimension and attribution-rule files matching `tidemark gen`",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--dir", required=True, help="output directory (created if missing)")
    parser.add_argument("--seed", type=int, required=True, help="the seed given to `tidemark gen`")
    parser.add_argument(
        "--start",
        type=_parse_start,
        default=DEFAULT_START_MS,
        help="the --start given to `tidemark gen`: ISO-8601 with zone, or 'now'"
        " (default 2026-11-01T00:00:00Z)",
    )
    parser.add_argument(
        "--change-after-seconds",
        type=int,
        default=DEFAULT_CHANGE_AFTER_SECONDS,
        help="second versions (prices, a plan, a cost center) become valid this many seconds"
        f" after --start (default {DEFAULT_CHANGE_AFTER_SECONDS})",
    )
    parser.set_defaults(func=_run)
