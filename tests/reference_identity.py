"""The expected outcome of identity resolution, computed independently of the job's code.

A plain, literal model of the identity rules: it never imports the production identity
code, and uses only the standard library. End-to-end tests feed it the same raw event docs
(parsed JSON, one or more tenants, in the order the job processes them) and compare the
job's profiles, links, merges and per-event profile ids with `expected_identity`.

The rules, in short (see `expected_identity` for the step-by-step procedure):

| type         | prio | limit | normalize         | source                                  | moves|
|--------------|------|-------|-------------------|-----------------------------------------|------|
| user_id      | 0    | 1     | trim              | `user_id`                               | no   |
| email        | 1    | 5     | trim, lower       | `traits.email`, else `context.traits`   | no   |
| phone        | 2    | 5     | E.164 (region US) | `traits.phone`, else `context.traits`   | no   |
| device_id    | 3    | 5     | trim (exact case) | `context.device_id`                     | yes  |
| anonymous_id | 4    | 5     | trim (exact case) | `anonymous_id`, alias `previous_id` (*) | yes  |

(*) only with `alias="merge_unidentified"`; by default (Segment Unify) alias does not merge.

Blocked values never become identifiers. A profile holds at most 50 identifiers, and a merge
may not take a profile past 25 merges.

Issue 10's last two rules, from Segment Unify's docs:
- A limit may have a period ("5 weekly"): a value then counts against it only when it was
  linked to the profile within one period (before or after) of the event's time, linked
  meaning the earliest event time it was seen on the profile. A count breaks such a limit
  only when the event or the merge adds to it (a rolling window may hold more than the limit
  of values that were each accepted at their own time).
- "moves": a shared device follows the user most recently identified with it. An event that
  names a person (a user_id, or a value of any limit-1 type) and carries a device / anonymous
  id held by a profile of another person (one that already holds a different value of that
  type, up to its limit) takes the id over when the event is later than the last event that
  identified that other person with the id (ties stay). The id then leaves the other profile
  and joins this event's profile as a new identifier would (the limits still apply).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PROFILE_NAMESPACE = uuid.UUID("6f1d5c1e-3f7a-4b61-9a54-2d0c7e1a8b90")
# PostHog's documented illegal distinct ids, compared case-insensitively, plus tidemark's
# older placeholders ("", "-1", "nil", "n/a", "unknown").
BLOCKED_VALUES = frozenset(
    v.lower()
    for v in [
        "anonymous", "guest", "distinctid", "distinct_id", "id", "not_authenticated", "email",
        "undefined", "true", "false", "[object Object]", "NaN", "None", "none", "null", "0",
        "", "-1", "nil", "n/a", "unknown",
    ]
)  # fmt: skip


class IdentifierRule(NamedTuple):
    priority: int  # lower = stronger
    limit: int  # distinct values of this type one profile may hold
    period_ms: int = 0  # 0: every value ever linked counts; else values within this of the event
    moves: bool = False  # a shared value follows the most recently identified person


DAY_MS = 24 * 60 * 60 * 1000
PERIODS = {"ever": 0, "daily": DAY_MS, "weekly": 7 * DAY_MS, "monthly": 30 * DAY_MS,
           "annually": 365 * DAY_MS}  # fmt: skip

DEFAULT_TYPES = {
    "user_id": IdentifierRule(0, 1),
    "email": IdentifierRule(1, 5),
    "phone": IdentifierRule(2, 5),
    "device_id": IdentifierRule(3, 5, moves=True),
    "anonymous_id": IdentifierRule(4, 5, moves=True),
}


@dataclass(frozen=True)
class IdentityRules:
    """The knobs of the rules. A type missing from `types` is never extracted."""

    types: dict[str, IdentifierRule] = field(default_factory=lambda: dict(DEFAULT_TYPES))
    max_identifiers: int = 50
    max_merges: int = 25
    # "ignore" (Segment Unify: alias never merges) or "merge_unidentified" (PostHog: the
    # previous id becomes an anonymous_id identifier of the event)
    alias: str = "ignore"

    def person_types(self) -> set[str]:
        """The types that name a person: user_id and every type with limit 1."""
        return {k for k, r in self.types.items() if k == "user_id" or r.limit == 1}


@dataclass
class Profile:
    """One profile as it stands after the last event.

    identifiers: type -> set of values; only types with at least one value are present.
    A merged (loser) profile keeps the identifiers, times and merge count it had when it
    was merged; its identifiers' links then point at the winner.
    """

    tenant_id: str
    profile_id: str
    identifiers: dict[str, set[str]]
    first_seen_ms: int
    last_seen_ms: int
    merged_into: str = ""  # "" while the profile is live
    merges: int = 0  # profiles merged into this one, counted transitively
    # (type, value) -> the earliest event time the value was seen on this profile
    linked_at: dict[tuple[str, str], int] = field(default_factory=dict)
    # (type, value) of a moving type -> the last event time that identified this profile's
    # person with it
    identified_at: dict[tuple[str, str], int] = field(default_factory=dict)


class Merge(NamedTuple):
    tenant_id: str
    winner: str
    loser: str
    reason: str  # f"{type}:{value}" of the event's first identifier that was linked to the loser
    message_id: str


@dataclass
class IdentityOutcome:
    profiles: dict[tuple[str, str], Profile]  # (tenant_id, profile_id) -> profile
    links: dict[tuple[str, str, str], str]  # (tenant_id, type, value) -> profile_id
    merges: list[Merge]  # in the order they happened
    resolved: dict[str, str]  # message_id -> profile_id at processing time ("" = none)
    resolved_by_key: dict[tuple[str, str], str]  # (tenant_id, message_id) -> profile_id

    def current_profile(self, tenant_id: str, profile_id: str) -> str:
        """The live profile that `profile_id` ended up in (following merged_into)."""
        seen = set()
        while profile_id:
            if profile_id in seen:
                raise AssertionError(f"merged_into cycle at {tenant_id}/{profile_id}")
            seen.add(profile_id)
            profile = self.profiles[(tenant_id, profile_id)]
            if not profile.merged_into:
                return profile_id
            profile_id = profile.merged_into
        return ""

    def live_profiles(self) -> dict[tuple[str, str], Profile]:
        return {key: p for key, p in self.profiles.items() if not p.merged_into}

    def profile_facts(self) -> dict[tuple[str, str], ProfileFacts]:
        """Every profile as the tests compare it with the job's (see profile_facts)."""
        return {
            key: profile_facts(p.identifiers, p.first_seen_ms, p.last_seen_ms, p.merged_into)
            for key, p in self.profiles.items()
        }


#: (non-empty identifier sets, first_seen_ms, last_seen_ms, merged_into)
ProfileFacts = tuple[dict[str, set[str]], int, int, str]


def profile_facts(
    identifiers: dict, first_seen_ms: int, last_seen_ms: int, merged_into: str
) -> ProfileFacts:
    """A profile reduced to what the tests compare, whether it comes from this model, the
    resolver's state or a ClickHouse row: its identifiers as sets (types without a value
    left out), its first and last seen times and what it was merged into."""
    return (
        {k: set(v) for k, v in identifiers.items() if v},
        first_seen_ms,
        last_seen_ms,
        merged_into,
    )


# --- reading a doc ------------------------------------------------------------------------------


def epoch_millis(value: object) -> int:
    """A contract timestamp (epoch millis, or ISO-8601 with a zone) as epoch millis."""
    if isinstance(value, int):
        return value
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (parsed - EPOCH) // timedelta(milliseconds=1)


def person_field(doc: dict, key: str) -> object:
    """traits.<key>; when that is absent (or null), context.traits.<key> if it is a string."""
    traits = doc.get("traits")
    if not isinstance(traits, dict):
        traits = {}
    value = traits.get(key)
    if value is None:
        context = doc.get("context")
        context_traits = context.get("traits") if isinstance(context, dict) else None
        if isinstance(context_traits, dict) and isinstance(context_traits.get(key), str):
            return context_traits[key]
        return None
    return value


def raw_identifiers(doc: dict, alias: str = "ignore") -> list[tuple[str, object]]:
    """(type, raw value) pairs of a doc, before normalization."""
    context = doc.get("context")
    device_id = context.get("device_id") if isinstance(context, dict) else None
    pairs = [
        ("user_id", doc.get("user_id")),
        ("email", person_field(doc, "email")),
        ("phone", person_field(doc, "phone")),
        ("device_id", device_id),
        ("anonymous_id", doc.get("anonymous_id")),
    ]
    if alias == "merge_unidentified" and doc.get("type") == "alias":
        pairs.append(("anonymous_id", doc.get("previous_id")))
    return pairs


def e164(text: str) -> str:
    """A phone number in E.164, default region US; "" when it is not a valid number."""
    for char in " -.()":
        text = text.replace(char, "")
    if text.startswith("+"):
        digits = text[1:]
        return text if digits.isdigit() and digits.isascii() else ""
    if not (text.isdigit() and text.isascii()):
        return ""
    if text.startswith("00"):
        return "+" + text[2:] if len(text) > 2 else ""
    if len(text) == 10:
        return "+1" + text
    if len(text) == 11 and text.startswith("1"):
        return "+" + text
    return ""


def normalize(kind: str, value: object) -> str:
    """The normalized value of one identifier; "" when it has none."""
    if not isinstance(value, str):
        return ""
    if kind != "email":  # ids are exact; only emails are case-folded (Segment, PostHog)
        return value.strip() if kind != "phone" else e164(value)
    return value.strip().lower()


def is_blocked(value: str) -> bool:
    """A listed junk value or an all-zero id, bare or inside one pair of quotes ('null')."""
    candidates = [value]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        candidates.append(value[1:-1].strip())
    for candidate in candidates:
        if candidate.lower() in BLOCKED_VALUES or all(char in "0-" for char in candidate):
            return True
    return False


def event_identifiers(doc: dict, rules: IdentityRules | None = None) -> list[tuple[str, str]]:
    """The event's identifiers: normalized, blocked removed, de-duplicated, sorted by
    (priority, type name, value)."""
    rules = rules or IdentityRules()
    found = set()
    for kind, raw in raw_identifiers(doc, rules.alias):
        if kind not in rules.types:
            continue
        value = normalize(kind, raw)
        if value and not is_blocked(value):
            found.add((kind, value))
    return sorted(found, key=lambda pair: (rules.types[pair[0]].priority, pair[0], pair[1]))


# --- resolution ---------------------------------------------------------------------------------


def profile_id_for(tenant_id: str, kind: str, value: str) -> str:
    return str(uuid.uuid5(PROFILE_NAMESPACE, f"{tenant_id}\x1f{kind}\x1f{value}"))


def has_user_id(profile: Profile) -> bool:
    return bool(profile.identifiers.get("user_id"))


def add_identifier(profile: Profile, kind: str, value: str) -> None:
    profile.identifiers.setdefault(kind, set()).add(value)


def split_linked(
    tenant_id: str, identifiers: list[tuple[str, str]], links: dict[tuple[str, str, str], str]
) -> tuple[list[str], list[tuple[str, str]]]:
    """(distinct linked profile ids in the order first met, identifiers not linked yet)."""
    matched: list[str] = []
    unlinked: list[tuple[str, str]] = []
    for kind, value in identifiers:
        profile_id = links.get((tenant_id, kind, value))
        if profile_id is None:
            unlinked.append((kind, value))
        elif profile_id not in matched:
            matched.append(profile_id)
    return matched, unlinked


def broken_rule(
    tenant_id: str,
    identifiers: list[tuple[str, str]],
    links: dict[tuple[str, str, str], str],
    profiles: dict[tuple[str, str], Profile],
    rules: IdentityRules,
    event_ms: int = 0,
) -> str:
    """The rule resolving these identifiers together would break ("" when none):
    "limit:<type>", "max_identifiers" or "merge" (max_merges, or two single-valued ids)."""
    matched, unlinked = split_linked(tenant_id, identifiers, links)
    members = [profiles[(tenant_id, p)] for p in matched]

    union = set(unlinked)
    for profile_id in matched:
        for kind, values in profiles[(tenant_id, profile_id)].identifiers.items():
            for value in values:
                union.add((kind, value))

    # (a) each type's distinct value count within its limit
    per_type: dict[str, int] = {}
    for kind, _ in union:
        per_type[kind] = per_type.get(kind, 0) + 1
    over = []
    for kind, count in per_type.items():
        rule = rules.types[kind]
        if count <= rule.limit:
            continue
        if rule.period_ms:
            # only values linked within one period of the event count, and only when the
            # event or the merge adds to what one profile already holds in that window
            def in_window(at: int) -> bool:
                return abs(event_ms - at) < rule.period_ms  # noqa: B023

            union_in = {pair for pair in unlinked if pair[0] == kind}
            held_in = []
            for p in members:
                mine = {
                    pair for pair, at in p.linked_at.items() if pair[0] == kind and in_window(at)
                }
                union_in |= mine
                held_in.append(len(mine))
            if len(union_in) <= rule.limit or len(union_in) <= max(held_in, default=0):
                continue
        over.append(kind)
    if over:
        return "limit:" + min(over, key=lambda k: (rules.types[k].priority, k))
    # (b) total identifiers
    if len(union) > rules.max_identifiers:
        return "max_identifiers"
    # (c) merge budget
    if len(matched) >= 2:
        total = sum(profiles[(tenant_id, p)].merges for p in matched) + len(matched) - 1
        if total > rules.max_merges:
            return "merge"
    # (d) no two matched profiles with different values of a single-valued type
    for kind, rule in rules.types.items():
        if rule.limit != 1:
            continue
        values = set()
        for profile_id in matched:
            for value in profiles[(tenant_id, profile_id)].identifiers.get(kind, set()):
                values.add(value)
        if len(values) > 1:
            return "merge"
    return ""


def identifier_to_drop(
    tenant_id: str,
    identifiers: list[tuple[str, str]],
    links: dict[tuple[str, str, str], str],
    rule: str,
    rules: IdentityRules,
) -> tuple[str, str]:
    """Segment Unify: the lowest-priority identifier that causes the broken rule goes, and
    the event stays where its other identifiers put it.

    The event belongs with its user_id (any single-valued type) when it has one, else with
    the profile of its strongest linked identifier: the "home". An identifier causes the
    break when it is not already on the home profile: for a type over its limit, one of that
    type; for too many identifiers, any; for a merge, a linked one. If none does, a linked
    identifier off the home profile; failing all, the weakest identifier.
    """

    def link(ident: tuple[str, str]) -> str | None:
        return links.get((tenant_id, ident[0], ident[1]))

    single = [i for i in identifiers if rules.types[i[0]].limit == 1]
    linked = [i for i in identifiers if link(i) is not None]
    home = single[0] if single else (linked[0] if linked else None)
    home_profile = link(home) if home is not None else None

    def away(ident: tuple[str, str]) -> bool:
        return ident != home and (home_profile is None or link(ident) != home_profile)

    weakest_first = list(reversed(identifiers))
    if rule.startswith("limit:"):
        causes = [i for i in weakest_first if i[0] == rule[6:] and away(i)]
    elif rule == "max_identifiers":
        causes = [i for i in weakest_first if away(i)]
    else:
        causes = [i for i in weakest_first if link(i) is not None and away(i)]
    causes += [i for i in weakest_first if link(i) is not None and away(i)]
    return causes[0] if causes else identifiers[-1]


def link_at(profile: Profile, pair: tuple[str, str], at: int) -> None:
    """The value has been on the profile since `at`, or since earlier."""
    profile.linked_at[pair] = min(at, profile.linked_at.get(pair, at))


def take_off(profile: Profile, pair: tuple[str, str]) -> None:
    """A shared id leaves the profile of the person it no longer follows."""
    kind, value = pair
    profile.identifiers[kind].discard(value)
    if not profile.identifiers[kind]:
        del profile.identifiers[kind]
    profile.linked_at.pop(pair, None)
    profile.identified_at.pop(pair, None)


def shared_ids_moving(
    tenant_id: str,
    identifiers: list[tuple[str, str]],
    links: dict[tuple[str, str, str], str],
    profiles: dict[tuple[str, str], Profile],
    rules: IdentityRules,
    event_ms: int,
) -> tuple[dict[tuple[str, str, str], str], dict[tuple[str, str], str]]:
    """(the links as this event sees them, moving id -> the profile it may leave).

    A moving id of the event follows this event's person when the event names a person the
    holder is not (the holder has other values of that person type, more than its limit
    together) and the event is later than the holder's person was last identified with it.
    """
    person_types = rules.person_types()
    persons = [pair for pair in identifiers if pair[0] in person_types]
    view = links
    moving: dict[tuple[str, str], str] = {}
    for pair in identifiers:
        holder_id = links.get((tenant_id, pair[0], pair[1]))
        if not persons or holder_id is None or not rules.types[pair[0]].moves:
            continue
        holder = profiles[(tenant_id, holder_id)]
        someone_else = False
        for kind in {k for k, _ in persons}:
            mine = {v for k, v in persons if k == kind}
            theirs = holder.identifiers.get(kind, set())
            if theirs and len(mine | theirs) > rules.types[kind].limit:
                someone_else = True
        last = holder.identified_at.get(pair)
        if someone_else and (last is None or event_ms > last):
            if view is links:
                view = dict(links)
            del view[(tenant_id, pair[0], pair[1])]
            moving[pair] = holder_id
    return view, moving


def expected_identity(events: list[dict], rules: IdentityRules | None = None) -> IdentityOutcome:
    """Resolve `events` (raw docs, in processing order) one by one; the final state.

    Per event with identifiers I:
    0. a shared device: each moving id of I held by another person's profile counts as not
       linked when this event is later than that person's last identification with it;
    1. while resolving I would break a rule, drop the weakest identifier causing it
       (identifier_to_drop; empty: resolves to "");
       a moving id that survived leaves its previous profile;
    2. no linked profile: a new profile named by I's first identifier, all of I linked;
    3. one linked profile: I's unlinked identifiers linked to it;
    4. several: the winner (has a user_id, then oldest first_seen, then smallest id)
       absorbs the others in (first_seen, id) order, then I's unlinked identifiers;
    5. the resolved profile's first/last seen widened by the event time (and the losers'),
       I's link times lowered to the event time, and, when I names a person, I's moving ids
       recorded as identified with that person at the event time.
    Cost records are skipped.
    """
    rules = rules or IdentityRules()
    profiles: dict[tuple[str, str], Profile] = {}
    links: dict[tuple[str, str, str], str] = {}
    merges: list[Merge] = []
    resolved: dict[str, str] = {}
    resolved_by_key: dict[tuple[str, str], str] = {}

    for doc in events:
        if doc.get("type") == "cost":
            continue
        tenant_id = doc["tenant_id"]
        message_id = doc["message_id"]

        identifiers = event_identifiers(doc, rules)
        event_ms = epoch_millis(doc["timestamp"])
        view, moving = shared_ids_moving(tenant_id, identifiers, links, profiles, rules, event_ms)
        while identifiers:
            rule = broken_rule(tenant_id, identifiers, view, profiles, rules, event_ms)
            if not rule:
                break
            gone = identifier_to_drop(tenant_id, identifiers, view, rule, rules)
            identifiers = [i for i in identifiers if i != gone]
        if not identifiers:
            resolved[message_id] = ""
            resolved_by_key[(tenant_id, message_id)] = ""
            continue
        for pair, holder_id in moving.items():
            if pair in identifiers:
                take_off(profiles[(tenant_id, holder_id)], pair)

        matched, unlinked = split_linked(tenant_id, identifiers, view)

        if len(matched) == 0:
            kind, value = identifiers[0]
            profile = Profile(
                tenant_id=tenant_id,
                profile_id=profile_id_for(tenant_id, kind, value),
                identifiers={},
                first_seen_ms=event_ms,
                last_seen_ms=event_ms,
            )
            profiles[(tenant_id, profile.profile_id)] = profile
        elif len(matched) == 1:
            profile = profiles[(tenant_id, matched[0])]
        else:
            candidates = [profiles[(tenant_id, p)] for p in matched]
            candidates.sort(
                key=lambda p: (0 if has_user_id(p) else 1, p.first_seen_ms, p.profile_id)
            )
            profile = candidates[0]
            losers = sorted(candidates[1:], key=lambda p: (p.first_seen_ms, p.profile_id))
            for loser in losers:
                reason = ""
                for kind, value in identifiers:
                    if view.get((tenant_id, kind, value)) == loser.profile_id:
                        reason = f"{kind}:{value}"
                        break
                for kind, values in loser.identifiers.items():
                    for value in values:
                        links[(tenant_id, kind, value)] = profile.profile_id
                        add_identifier(profile, kind, value)
                        link_at(profile, (kind, value), loser.linked_at[(kind, value)])
                for pair, at in loser.identified_at.items():
                    profile.identified_at[pair] = max(at, profile.identified_at.get(pair, at))
                profile.merges += 1 + loser.merges
                loser.merged_into = profile.profile_id
                profile.first_seen_ms = min(profile.first_seen_ms, loser.first_seen_ms)
                profile.last_seen_ms = max(profile.last_seen_ms, loser.last_seen_ms)
                merges.append(
                    Merge(tenant_id, profile.profile_id, loser.profile_id, reason, message_id)
                )

        for kind, value in unlinked:
            links[(tenant_id, kind, value)] = profile.profile_id
            add_identifier(profile, kind, value)
        profile.first_seen_ms = min(profile.first_seen_ms, event_ms)
        profile.last_seen_ms = max(profile.last_seen_ms, event_ms)
        names_person = any(kind in rules.person_types() for kind, _ in identifiers)
        for pair in identifiers:
            link_at(profile, pair, event_ms)
            if names_person and rules.types[pair[0]].moves:
                before = profile.identified_at.get(pair, event_ms)
                profile.identified_at[pair] = max(before, event_ms)
        resolved[message_id] = profile.profile_id
        resolved_by_key[(tenant_id, message_id)] = profile.profile_id

    return IdentityOutcome(profiles, links, merges, resolved, resolved_by_key)
