"""Identity resolution: which customer profile an event belongs to, merging profiles as
identifiers connect them.

Why a pure-Python engine with a store protocol: the Flink operator keeps links and profiles in
keyed state (MapState behind a cache), while tests and replays want a dict. Keeping Flink out of
this module lets the rules be tested by a table of scenarios in milliseconds, and lets the
operator swap the storage without touching the rules.

The model: an event carries identifiers (type, value) such as ("email", "ana@x.com"). Each
identifier is linked to at most one live profile; an event whose identifiers are linked to
several profiles merges them into one winner. Limits (values per type, identifiers and merges
per profile) and the hard rule "never merge two different user_ids" stop one shared or junk
identifier from collapsing many people into a single profile: when an event would break a rule,
its weakest identifiers are dropped, one at a time, until it does not. A limit may have a
period ("5 weekly", by event time), and a shared device or browser id follows the person most
recently identified with it, by event time (`reassign`), so neither depends on arrival order.

This runs once per event at stream rate, so the hot path is dict lookups and small sets:
phonenumbers is called only when a phone is present (behind a bounded memo), and the JSON
columns are parsed only when a configured custom type needs them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import phonenumbers

from udfs.identity_rules import DEFAULT_BLOCKED, compile_patterns, is_blocked

#: Namespace of the uuid5 profile ids, so an id is a pure function of tenant and identifier.
TIDEMARK_NAMESPACE = uuid.UUID("6f1d5c1e-3f7a-4b61-9a54-2d0c7e1a8b90")

NORMALIZERS = ("trim", "lower", "e164")
#: What an alias event's previous_id does. "ignore" (Segment Unify: alias calls do not merge
#: profiles) or "merge_unidentified" (PostHog: the previous id joins the user's profile, and
#: two identified profiles, each with its own user_id, are never merged by it).
ALIAS_MODES = ("ignore", "merge_unidentified")
#: Row columns a type may read directly; anything else is a path into a JSON column.
ROW_COLUMNS = ("user_id", "email", "phone", "device_id", "anonymous_id")
JSON_COLUMNS = ("traits", "properties", "context")
#: Limit periods (Segment's "5 weekly"): a value counts against its type's limit only when it
#: was linked to the profile within one period of the event's own time, before or after (events
#: arrive late, and a symmetric window makes "these two values are a period apart" the same in
#: every arrival order). Event time, never the wall clock, so a replay decides the same.
PERIODS_MS = {
    "ever": 0,
    "daily": 86_400_000,
    "weekly": 7 * 86_400_000,
    "monthly": 30 * 86_400_000,
    "annually": 365 * 86_400_000,
}
_PROFILE_FORMAT = 2  # first element of Profile.to_bytes, so the layout can evolve
_FORMAT_1_FIELDS = 9  # format 1 had no linked_ms and claims (state saved before limit periods)
_NEVER = -(1 << 62)  # an event time before any real one: "no claim yet"
_NO_CLAIMS: dict[str, int] = {}  # read-only default for a type without claims
_UNKNOWN_PRIORITY = 1 << 30  # a type a profile holds but the rules no longer define
_E164_MEMO_SIZE = 4096
_MISSING = object()


# --- rules --------------------------------------------------------------------------------------


# No slots=True on these dataclasses: jobs pickle the udfs package by value (see
# jobs/environment.py), and cloudpickle 2.2 rebuilds slotted dataclass instances without their
# attributes.
@dataclass(frozen=True)
class IdentifierType:
    """One kind of identifier: its strength, how many values a profile may hold (per period),
    where the events row carries it, and whether a value shared by two users follows the most
    recent one."""

    name: str
    priority: int  # lower is stronger: wins ordering, is dropped last
    limit: int  # distinct values one profile may hold (linked within period_ms of an event)
    normalize: tuple[str, ...]  # applied in order; see NORMALIZERS
    source: str  # a ROW_COLUMNS name, or "<json column>.<key>[.<key>...]"
    period_ms: int = 0  # 0: the limit counts every value ever linked ("ever")
    reassign: bool = False  # a shared value moves to the user most recently seen with it


DEFAULT_TYPES = (
    IdentifierType("user_id", 0, 1, ("trim",), "user_id"),
    IdentifierType("email", 1, 5, ("trim", "lower"), "email"),
    IdentifierType("phone", 2, 5, ("e164",), "phone"),
    # Device and anonymous ids are exact (only surrounding blanks trimmed): SDKs generate
    # them, so 'ABC' and 'abc' are two devices, and lower-casing them merged strangers.
    # A shared device (or browser) follows the user most recently identified on it (Segment).
    IdentifierType("device_id", 3, 5, ("trim",), "device_id", reassign=True),
    IdentifierType("anonymous_id", 4, 5, ("trim",), "anonymous_id", reassign=True),
)


@dataclass(frozen=True)
class _Plan:
    """A type compiled for extraction: where to read it, how to normalize, what to refuse."""

    name: str
    column: str  # the row key to read
    path: tuple[str, ...]  # keys inside the parsed JSON column; () for a plain column
    ops: tuple[str, ...]
    blocked: frozenset[str]
    patterns: tuple[re.Pattern[str], ...]


@dataclass(frozen=True)
class IdentityRules:
    """The identity section of the settings: identifier types, blocked values and caps.

    Build it with `from_mapping` (validates, names the bad key) or `default()`.
    """

    types: tuple[IdentifierType, ...] = DEFAULT_TYPES
    blocked: frozenset[str] = DEFAULT_BLOCKED  # global, lower-case
    blocked_patterns: tuple[re.Pattern[str], ...] = ()  # full-match, global
    blocked_by_type: dict[str, frozenset[str]] = field(default_factory=dict, hash=False)
    max_identifiers: int = 50
    max_merges: int = 25
    alias_previous_id_type: str = "anonymous_id"
    alias: str = "ignore"  # one of ALIAS_MODES
    default_phone_region: str = "US"
    # Derived in __post_init__: lookups the hot path needs precomputed.
    _plans: tuple[_Plan, ...] = field(init=False, repr=False, compare=False)
    _alias_plan: _Plan = field(init=False, repr=False, compare=False)
    _order: dict[str, tuple[int, str]] = field(init=False, repr=False, compare=False)
    _limits: dict[str, int] = field(init=False, repr=False, compare=False)
    _periods: dict[str, int] = field(init=False, repr=False, compare=False)
    _hard_types: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _hard_set: frozenset[str] = field(init=False, repr=False, compare=False)
    _reassign: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        types = tuple(sorted(self.types, key=lambda t: (t.priority, t.name)))
        names = {t.name for t in types}
        if len(names) != len(types):
            raise ValueError("identity.types: duplicate type names")
        if self.alias not in ALIAS_MODES:
            raise ValueError(f"identity.alias: must be one of {', '.join(ALIAS_MODES)}")
        if self.alias_previous_id_type not in names:
            raise ValueError(
                f"identity.alias_previous_id_type: unknown type {self.alias_previous_id_type!r}"
            )
        plans = tuple(self._compile(t) for t in types)
        setter = object.__setattr__
        setter(self, "types", types)
        setter(self, "_plans", plans)
        setter(self, "_alias_plan", next(p for p in plans if p.name == self.alias_previous_id_type))
        setter(self, "_order", {t.name: (t.priority, t.name) for t in types})
        setter(self, "_limits", {t.name: t.limit for t in types})
        setter(self, "_periods", {t.name: t.period_ms for t in types if t.period_ms})
        # user_id never merges with a different user_id, whatever its limit; nor does any type
        # a profile may hold only once. These types name a person: an event carrying one is
        # an identification, which is what claims a shared device.
        hard = tuple(t.name for t in types if t.name == "user_id" or t.limit == 1)
        setter(self, "_hard_types", hard)
        setter(self, "_hard_set", frozenset(hard))
        setter(self, "_reassign", frozenset(t.name for t in types if t.reassign))

    def _compile(self, t: IdentifierType) -> _Plan:
        blocked = self.blocked | self.blocked_by_type.get(t.name, frozenset())
        if t.source in ROW_COLUMNS:
            return _Plan(t.name, t.source, (), t.normalize, blocked, self.blocked_patterns)
        column, *path = t.source.split(".")
        return _Plan(t.name, column, tuple(path), t.normalize, blocked, self.blocked_patterns)

    @classmethod
    def default(cls) -> IdentityRules:
        """The built-in rules: DEFAULT_TYPES, DEFAULT_BLOCKED (PostHog's illegal ids and a few
        placeholders), 50 identifiers, 25 merges."""
        return cls()

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> IdentityRules:
        """Rules from the `identity` settings section; defaults for what it leaves out.

        Raises ValueError naming the offending key, e.g. "identity.types.email.limit: must be a
        positive integer", so a typo fails at submit time rather than silently defaulting.
        """
        return _rules_from_mapping(mapping)

    def sort_key(self, identifier: tuple[str, str]) -> tuple[int, str, str]:
        """(priority, type, value): the order of identifiers everywhere in this module."""
        priority, name = self._order.get(identifier[0], (_UNKNOWN_PRIORITY, identifier[0]))
        return priority, name, identifier[1]


_RULE_KEYS = (
    "types",
    "blocked",
    "blocked_defaults",
    "blocked_patterns",
    "blocked_by_type",
    "max_identifiers",
    "max_merges",
    "alias",
    "alias_previous_id_type",
    "default_phone_region",
)
_TYPE_KEYS = ("priority", "limit", "normalize", "source", "reassign")


def _int(value: Any, key: str, minimum: int) -> int:
    if value.__class__ is not int or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise ValueError(f"{key}: must be {kind}, got {value!r}")
    return value


def _limit(value: Any, key: str) -> tuple[int, int]:
    """(count, period ms) from 5, "5 ever" or "5 weekly" (Segment's notation). A string
    needs its period: a quoted bare number is more likely a templating slip than intent."""
    if value.__class__ is int:
        return _int(value, key, 1), 0
    if isinstance(value, str):
        count, _, period = value.strip().partition(" ")
        period = period.strip().lower()
        if count.isascii() and count.isdigit() and int(count) >= 1 and period in PERIODS_MS:
            return int(count), PERIODS_MS[period]
    raise ValueError(
        f"{key}: must be a positive integer, optionally with a period"
        f" ({', '.join(PERIODS_MS)}) such as '5 weekly', got {value!r}"
    )


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{key}: must be a mapping, got {type(value).__name__}")
    return value


def _strings(value: Any, key: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"{key}: must be a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"{key}[{i}]: must be a string, got {type(item).__name__}")
    return list(value)


def _type_name_ok(name: Any) -> bool:
    """Lower-case letters, digits and '_': type names appear in "type:value" reasons."""
    return (
        isinstance(name, str)
        and name[:1].isalpha()
        and name.isascii()
        and name.replace("_", "").isalnum()
        and name == name.lower()
    )


def _source(value: Any, key: str) -> str:
    if isinstance(value, str):
        if value in ROW_COLUMNS:
            return value
        column, _, path = value.partition(".")
        if column in JSON_COLUMNS and path and all(path.split(".")):
            return value
    raise ValueError(
        f"{key}: must be one of {', '.join(ROW_COLUMNS)} or traits.<name>, properties.<name>,"
        f" context.<name>; got {value!r}"
    )


def _identifier_type(name: str, spec: Any, base: IdentifierType | None) -> IdentifierType:
    key = f"identity.types.{name}"
    spec = _mapping(spec, key)
    for sub in spec:
        if sub not in _TYPE_KEYS:
            raise ValueError(f"{key}.{sub}: unknown key (expected one of {', '.join(_TYPE_KEYS)})")
    if base is None:  # a custom type says where it lives and how strong it is
        for required in ("source", "priority"):
            if required not in spec:
                raise ValueError(f"{key}.{required}: required for a custom identifier type")
        base = IdentifierType(name, 0, 5, ("trim",), "")
    priority, limit, period = base.priority, base.limit, base.period_ms
    normalize, source, reassign = base.normalize, base.source, base.reassign
    if "priority" in spec:
        priority = _int(spec["priority"], f"{key}.priority", 0)
    if "limit" in spec:
        limit, period = _limit(spec["limit"], f"{key}.limit")
    if "normalize" in spec:
        ops = _strings(spec["normalize"], f"{key}.normalize")
        for op in ops:
            if op not in NORMALIZERS:
                raise ValueError(
                    f"{key}.normalize: unknown normalizer {op!r}"
                    f" (expected one of {', '.join(NORMALIZERS)})"
                )
        normalize = tuple(ops)
    if "source" in spec:
        source = _source(spec["source"], f"{key}.source")
    if "reassign" in spec:
        reassign = spec["reassign"]
        if reassign.__class__ is not bool:
            raise ValueError(f"{key}.reassign: must be true or false, got {reassign!r}")
    return IdentifierType(name, priority, limit, normalize, source, period, reassign)


def _rules_from_mapping(mapping: Mapping[str, Any]) -> IdentityRules:
    mapping = _mapping(mapping, "identity")
    for key in mapping:
        if key not in _RULE_KEYS:
            raise ValueError(
                f"identity.{key}: unknown key (expected one of {', '.join(_RULE_KEYS)})"
            )
    types = {t.name: t for t in DEFAULT_TYPES}
    for name, spec in _mapping(mapping.get("types", {}), "identity.types").items():
        if not _type_name_ok(name):
            raise ValueError(
                f"identity.types.{name}: a type name is lower-case letters, digits and '_',"
                " starting with a letter"
            )
        types[name] = _identifier_type(name, spec, types.get(name))
    defaults = mapping.get("blocked_defaults", True)
    if defaults.__class__ is not bool:
        raise ValueError(f"identity.blocked_defaults: must be true or false, got {defaults!r}")
    blocked = set(DEFAULT_BLOCKED) if defaults else set()
    patterns = compile_patterns(mapping.get("blocked_patterns", []), "identity.blocked_patterns")
    if "blocked" in mapping:
        blocked.update(v.lower() for v in _strings(mapping["blocked"], "identity.blocked"))
    by_type: dict[str, frozenset[str]] = {}
    raw_by_type = _mapping(mapping.get("blocked_by_type", {}), "identity.blocked_by_type")
    for name, values in raw_by_type.items():
        key = f"identity.blocked_by_type.{name}"
        if name not in types:
            raise ValueError(f"{key}: unknown identifier type {name!r}")
        by_type[name] = frozenset(v.lower() for v in _strings(values, key))
    alias_type = mapping.get("alias_previous_id_type", "anonymous_id")
    if alias_type not in types:
        raise ValueError(
            f"identity.alias_previous_id_type: must be an identifier type"
            f" ({', '.join(sorted(types))}), got {alias_type!r}"
        )
    alias = mapping.get("alias", "ignore")
    if alias not in ALIAS_MODES:
        raise ValueError(f"identity.alias: must be one of {', '.join(ALIAS_MODES)}, got {alias!r}")
    region = mapping.get("default_phone_region", "US")
    if not isinstance(region, str) or region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"identity.default_phone_region: must be a two-letter region code such as 'US',"
            f" got {region!r}"
        )
    return IdentityRules(
        types=tuple(types.values()),
        blocked=frozenset(blocked),
        blocked_patterns=patterns,
        blocked_by_type=by_type,
        max_identifiers=_int(mapping.get("max_identifiers", 50), "identity.max_identifiers", 1),
        max_merges=_int(mapping.get("max_merges", 25), "identity.max_merges", 0),
        alias_previous_id_type=alias_type,
        alias=alias,
        default_phone_region=region.upper(),
    )


# --- extraction ---------------------------------------------------------------------------------

_e164_memo: dict[tuple[str, str], str | None] = {}


def _e164(value: str, region: str) -> str | None:
    """A phone in E.164, or None when phonenumbers cannot read it as a possible number.

    Memoised (bounded) because a person's phone recurs on every identify and parsing costs
    tens of microseconds.
    """
    key = (value, region)
    hit = _e164_memo.get(key, _MISSING)
    if hit is not _MISSING:
        return hit  # type: ignore[return-value]
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        result = None
    else:
        result = (
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            if phonenumbers.is_possible_number(number)
            else None
        )
    if len(_e164_memo) >= _E164_MEMO_SIZE:
        _e164_memo.clear()
    _e164_memo[key] = result
    return result


def _normalized(raw: Any, plan: _Plan, region: str) -> str | None:
    """The identifier value for a raw field, or None when absent, invalid or blocked."""
    if raw.__class__ is not str:
        if raw.__class__ is not int:  # JSON numbers are ids too (customer_number: 1234)
            return None
        raw = str(raw)
    if not raw:
        return None
    value = raw
    for op in plan.ops:
        if op == "trim":
            value = value.strip()
        elif op == "lower":
            value = value.lower()
        else:
            value = _e164(value, region)
            if value is None:
                return None
    # Blocked: the listed junk values (bare or quoted), patterns, all-zero ids.
    if is_blocked(value, plan.blocked, plan.patterns):
        return None
    return value


def _json_field(row: Mapping[str, Any], plan: _Plan, parsed: dict[str, Any]) -> Any:
    """A value inside one of the row's JSON columns, parsing each column at most once."""
    doc = parsed.get(plan.column, _MISSING)
    if doc is _MISSING:
        doc = row.get(plan.column)
        if doc.__class__ in (str, bytes):
            try:
                doc = orjson.loads(doc)
            except orjson.JSONDecodeError:
                doc = None
        parsed[plan.column] = doc
    for key in plan.path:
        if doc.__class__ is not dict:
            return None
        doc = doc.get(key)
    return doc


def extract_identifiers(row: Mapping[str, Any], rules: IdentityRules) -> list[tuple[str, str]]:
    """The identifiers of one events row: normalized, blocked ones removed, de-duplicated and
    sorted by (priority, type name, value)."""
    region = rules.default_phone_region
    found: list[tuple[str, str]] = []
    parsed: dict[str, Any] = {}
    for plan in rules._plans:
        raw = _json_field(row, plan, parsed) if plan.path else row.get(plan.column)
        if raw:
            value = _normalized(raw, plan, region)
            if value is not None:
                found.append((plan.name, value))
    if rules.alias != "ignore" and row.get("type") == "alias":
        # merge_unidentified: the previous (usually anonymous) id is an identifier too; the
        # resolver's "never two user_ids" rule keeps it from merging two identified people.
        value = _normalized(row.get("previous_id"), rules._alias_plan, region)
        if value is not None:
            extra = (rules._alias_plan.name, value)
            if extra not in found:
                found.append(extra)
                found.sort(key=rules.sort_key)
    return found


# --- profiles and the store ---------------------------------------------------------------------


@dataclass
class Profile:
    """One resolved customer: the identifiers linked to it and its merge history.

    A profile that lost a merge keeps its fields (for audit and for rekeying downstream
    state) with merged_into set to the winner; no link points at it any more.

    linked_ms runs parallel to identifiers: the event time each value was linked at, which a
    limit with a period ("5 weekly") counts by. claims holds, for values of reassignable types
    (type -> value -> ms), the latest event time this profile's user was identified with the
    value: a shared device follows the most recent user by event time, not by arrival. (Nested
    rather than "type:value" keys so the per-event check builds no strings.)
    """

    profile_id: str
    tenant_id: str
    identifiers: dict[str, list[str]] = field(default_factory=dict)  # values in link order
    first_seen_ms: int = 0
    last_seen_ms: int = 0
    merges: int = 0  # profiles merged into this one, transitively
    merged_from: list[str] = field(default_factory=list)  # their ids, in merge order
    merged_into: str = ""
    version: int = 0  # the caller's per-tenant sequence number of the last change
    linked_ms: dict[str, list[int]] = field(default_factory=dict)  # parallel to identifiers
    claims: dict[str, dict[str, int]] = field(default_factory=dict)  # type -> value -> ms

    def to_bytes(self) -> bytes:
        """Compact positional JSON for Flink state (no field names on every profile)."""
        return orjson.dumps(
            [
                _PROFILE_FORMAT,
                self.profile_id,
                self.tenant_id,
                self.identifiers,
                self.first_seen_ms,
                self.last_seen_ms,
                self.merges,
                self.merged_from,
                self.merged_into,
                self.version,
                self.linked_ms,
                self.claims,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Profile:
        """The inverse of to_bytes. Reads format 1 too (a savepoint from before limit periods):
        its values count as linked at the profile's first_seen, and it has no claims."""
        fmt, *fields = orjson.loads(data)
        if fmt == 1 and len(fields) == _FORMAT_1_FIELDS:
            profile = cls(*fields)
            first = profile.first_seen_ms
            profile.linked_ms = {t: [first] * len(v) for t, v in profile.identifiers.items()}
            return profile
        if fmt != _PROFILE_FORMAT:
            raise ValueError(f"unknown profile format {fmt!r}")
        return cls(*fields)

    def add(self, id_type: str, value: str, linked_ms: int) -> None:
        """Append a value linked at linked_ms, unless the profile holds it already."""
        values = self.identifiers.get(id_type)
        if values is None:
            self.identifiers[id_type] = [value]
            self.linked_ms[id_type] = [linked_ms]
        elif value not in values:
            self._stamps_of(id_type).append(linked_ms)
            values.append(value)

    def _stamps_of(self, id_type: str) -> list[int]:
        """The linked_ms list of a type, one per value (a profile built without them, as
        tests and format 1 do, counts its values as linked at first_seen)."""
        stamps = self.linked_ms.get(id_type)
        count = len(self.identifiers.get(id_type, ()))
        if stamps is None or len(stamps) != count:
            stamps = self.linked_ms[id_type] = [self.first_seen_ms] * count
        return stamps

    def remove(self, id_type: str, value: str) -> None:
        """Take a value off (a shared identifier moving to a more recent user's profile)."""
        values = self.identifiers[id_type]
        index = values.index(value)
        del self._stamps_of(id_type)[index]
        del values[index]
        if not values:
            del self.identifiers[id_type]
            del self.linked_ms[id_type]
        by_value = self.claims.get(id_type)
        if by_value is not None:
            by_value.pop(value, None)
            if not by_value:
                del self.claims[id_type]

    def stamps(self, id_type: str) -> list[tuple[str, int]]:
        """(value, linked_ms) of every value of a type."""
        if id_type not in self.identifiers:
            return []
        return list(zip(self.identifiers.get(id_type, ()), self._stamps_of(id_type), strict=True))


class IdentityStore(Protocol):
    """Where links (identifier -> live profile id) and profiles live, per tenant."""

    def get_link(self, tenant_id: str, id_type: str, value: str) -> str | None: ...

    def put_link(self, tenant_id: str, id_type: str, value: str, profile_id: str) -> None: ...

    def get_profile(self, tenant_id: str, profile_id: str) -> Profile | None: ...

    def put_profile(self, profile: Profile) -> None: ...


@dataclass
class DictStore:
    """An in-memory IdentityStore for tests and benchmarks.

    Profiles are kept serialized, as Flink state keeps them: a caller mutating a returned
    Profile changes nothing until put_profile, and two stores compare equal exactly when
    their contents do.
    """

    links: dict[tuple[str, str, str], str] = field(default_factory=dict)
    profiles: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def get_link(self, tenant_id: str, id_type: str, value: str) -> str | None:
        return self.links.get((tenant_id, id_type, value))

    def put_link(self, tenant_id: str, id_type: str, value: str, profile_id: str) -> None:
        self.links[(tenant_id, id_type, value)] = profile_id

    def get_profile(self, tenant_id: str, profile_id: str) -> Profile | None:
        data = self.profiles.get((tenant_id, profile_id))
        return None if data is None else Profile.from_bytes(data)

    def put_profile(self, profile: Profile) -> None:
        self.profiles[(profile.tenant_id, profile.profile_id)] = profile.to_bytes()

    def all_profiles(self, tenant_id: str) -> list[Profile]:
        """Every profile of a tenant, merged-away ones included."""
        return [Profile.from_bytes(d) for (t, _), d in self.profiles.items() if t == tenant_id]


# --- resolution ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Merge:
    """One profile merged into another; rekeyed lists every old id now resolving to winner."""

    tenant_id: str
    winner: str
    loser: str
    reason: str  # "type:value" of the event's strongest identifier linked to the loser
    message_id: str
    event_time_ms: int
    version: int
    rekeyed: tuple[str, ...]


@dataclass(frozen=True)
class Resolution:
    """The outcome of one event; profile_id is "" when the event has no usable identifier."""

    profile_id: str
    merges: tuple[Merge, ...] = ()
    dropped: tuple[tuple[str, str, str], ...] = ()  # (type, value, reason)
    linked: tuple[tuple[str, str], ...] = ()  # newly (re-)linked to profile_id, sorted
    moved_from: tuple[str, ...] = ()  # profiles a shared identifier was taken from


_UNRESOLVED = Resolution("")


def profile_id_for(tenant_id: str, id_type: str, value: str) -> str:
    """The id of a profile created for this identifier: stable across runs and replays."""
    return str(uuid.uuid5(TIDEMARK_NAMESPACE, f"{tenant_id}\x1f{id_type}\x1f{value}"))


class IdentityResolver:
    """Applies the identity rules to one event at a time against a store."""

    def __init__(self, rules: IdentityRules, store: IdentityStore) -> None:
        self.rules = rules
        self.store = store

    def resolve(
        self,
        tenant_id: str,
        identifiers: list[tuple[str, str]],
        event_time_ms: int,
        message_id: str,
        version: int,
    ) -> Resolution:
        """Resolve an event's identifiers (from extract_identifiers, in its order) to a profile,
        linking, merging and dropping identifiers as the rules say.

        `version` is the caller's per-tenant sequence number; everything written here gets it.
        Nothing is written when nothing changes, so re-applying an event is a no-op.
        """
        if not identifiers:
            return _UNRESOLVED
        store = self.store
        ids = [(t, v) for t, v in identifiers]
        # Links and profiles cannot change while the candidate shrinks: read each once.
        link_of: dict[tuple[str, str], str] = {}
        profiles: dict[str, Profile] = {}
        for ident in ids:
            pid = store.get_link(tenant_id, ident[0], ident[1])
            if pid is None:
                continue
            if pid not in profiles:
                profile = store.get_profile(tenant_id, pid)
                if profile is None:  # a dangling link: treat the identifier as new
                    continue
                profiles[pid] = profile
            link_of[ident] = pid

        dropped: list[tuple[str, str, str]] = []
        if len(link_of) == len(ids) and len(profiles) == 1:
            # The common case, a known person again: every identifier already on one profile.
            # The union is that profile, valid when it was built under these rules, so there
            # is nothing to check (measured: a third of the stage's time went to the check).
            profile = next(iter(profiles.values()))
            changed = _touch(profile, event_time_ms)
            if self._claim(profile, ids, event_time_ms):
                changed = True
            if self.rules._periods and self._seen_earlier(profile, ids, event_time_ms):
                changed = True
            if changed:
                profile.version = version
                store.put_profile(profile)
            return Resolution(profile.profile_id, (), (), ())
        # A shared device held by another user's profile: moving it makes it new to this event.
        origin = {i: link_of.pop(i) for i in self._moving(ids, link_of, profiles, event_time_ms)}
        while True:
            members = list(dict.fromkeys(link_of[i] for i in ids if i in link_of))
            if len(members) == 1 and all(i in link_of for i in ids):
                break  # the union is one existing profile: nothing to check (see above)
            reason = self._violation(ids, [profiles[p] for p in members], link_of, event_time_ms)
            if reason is None:
                break
            id_type, value = ids.pop(_drop_index(ids, link_of, reason, self.rules._hard_types))
            dropped.append((id_type, value, reason))
            if not ids:
                return Resolution("", (), tuple(dropped), ())

        moved_from = self._take_over(ids, origin, profiles, version) if origin else ()
        new_ids = [i for i in ids if i not in link_of]
        if not members:
            created = self._create(tenant_id, ids, event_time_ms, version, dropped)
            return _with_moves(created, moved_from)
        if len(members) == 1:
            profile = profiles[members[0]]
            changed = self._link(profile, new_ids, event_time_ms)
            changed = _touch(profile, event_time_ms) or changed
            changed = self._claim(profile, ids, event_time_ms) or changed
            if self.rules._periods and self._seen_earlier(profile, ids, event_time_ms):
                changed = True
            if changed:
                profile.version = version
                store.put_profile(profile)
            linked = tuple(sorted(new_ids, key=self.rules.sort_key))
            return Resolution(profile.profile_id, (), tuple(dropped), linked, moved_from)
        merged = self._merge(
            tenant_id,
            ids,
            [profiles[p] for p in members],
            link_of,
            new_ids,
            event_time_ms,
            message_id,
            version,
            dropped,
        )
        return _with_moves(merged, moved_from)

    # -- shared identifiers (Segment: a shared device goes to the most recent identified user)

    def _moving(
        self,
        ids: list[tuple[str, str]],
        link_of: dict[tuple[str, str], str],
        profiles: dict[str, Profile],
        event_time_ms: int,
    ) -> list[tuple[str, str]]:
        """The event's reassignable identifiers to take from another user's profile.

        Only an identification moves one: the event carries a person-defining value (user_id,
        a limit-1 type) that the holder cannot take (it has another value of that type, up
        to the limit), and the event is later than the holder's user was last identified
        with the identifier. Ties stay with the holder. Deciding by event time, not arrival,
        makes the final holder the user with the latest identification in any order.
        """
        rules = self.rules
        reassign = rules._reassign
        mine = [i for i in ids if i[0] in rules._hard_set]
        if not mine or not reassign:
            return []
        moving = []
        for ident in ids:
            pid = link_of.get(ident)
            if pid is None or ident[0] not in reassign:
                continue
            holder = profiles[pid]
            claimed = holder.claims.get(ident[0], _NO_CLAIMS).get(ident[1], _NEVER)
            if event_time_ms > claimed and self._other_person(holder, mine):
                moving.append(ident)
        return moving

    def _other_person(self, holder: Profile, mine: list[tuple[str, str]]) -> bool:
        """Whether the holder is someone else: joining it would take one of the event's
        person-defining types past its limit."""
        limits = self.rules._limits
        for id_type in {t for t, _ in mine}:
            held = holder.identifiers.get(id_type)
            if held:
                values = set(held).union(v for t, v in mine if t == id_type)
                if len(values) > limits[id_type]:
                    return True
        return False

    def _take_over(
        self,
        ids: list[tuple[str, str]],
        origin: dict[tuple[str, str], str],
        profiles: dict[str, Profile],
        version: int,
    ) -> tuple[str, ...]:
        """Take the moving identifiers that survived the rules off their previous holders;
        the holders' ids."""
        moved_from: list[str] = []
        for ident, pid in origin.items():
            if ident in ids:
                holder = profiles[pid]
                holder.remove(*ident)
                holder.version = version
                self.store.put_profile(holder)
                if pid not in moved_from:
                    moved_from.append(pid)
        return tuple(moved_from)

    def _claim(self, profile: Profile, ids: list[tuple[str, str]], event_time_ms: int) -> bool:
        """On an identification, record that the profile's user was seen with the event's
        reassignable identifiers at event_time_ms (the latest time is kept); True if any
        claim moved. Every identifier in `ids` is on the profile by now.

        Runs for every event, so: one pass to find a person, no strings built."""
        rules = self.rules
        hard = rules._hard_set
        for ident in ids:
            if ident[0] in hard:
                break
        else:
            return False
        reassign = rules._reassign
        claims = profile.claims
        changed = False
        for id_type, value in ids:
            if id_type in reassign:
                by_value = claims.get(id_type)
                if by_value is None:
                    claims[id_type] = {value: event_time_ms}
                    changed = True
                elif by_value.get(value, _NEVER) < event_time_ms:
                    by_value[value] = event_time_ms
                    changed = True
        return changed

    def _seen_earlier(
        self, profile: Profile, ids: list[tuple[str, str]], event_time_ms: int
    ) -> bool:
        """Move a period type's link time back to this event when it is earlier; True if any
        moved.

        A value counts as linked since the earliest event that showed it on the profile, so
        a late event (or one that merged an anonymous profile in) gives the same link time
        in any arrival order. Only types with a period read link times, so only they are
        kept exact.
        """
        periods = self.rules._periods
        changed = False
        for id_type, value in ids:
            if id_type in periods:
                values = profile.identifiers.get(id_type)
                if values and value in values:
                    stamps = profile._stamps_of(id_type)
                    index = values.index(value)
                    if stamps[index] > event_time_ms:
                        stamps[index] = event_time_ms
                        changed = True
        return changed

    # -- the rules

    def _violation(
        self,
        ids: list[tuple[str, str]],
        members: list[Profile],
        link_of: dict[tuple[str, str], str],
        event_time_ms: int,
    ) -> str | None:
        """The first rule the would-be union breaks, as a drop reason; None when it is valid."""
        rules = self.rules
        union: dict[str, set[str]] = {}
        for profile in members:
            for id_type, values in profile.identifiers.items():
                have = union.get(id_type)
                if have is None:
                    union[id_type] = set(values)
                else:
                    have.update(values)
        for ident in ids:
            if ident not in link_of:
                have = union.get(ident[0])
                if have is None:
                    union[ident[0]] = {ident[1]}
                else:
                    have.add(ident[1])
        limits = rules._limits
        periods = rules._periods
        over = [
            t
            for t, values in union.items()
            if len(values) > limits.get(t, len(values))
            and (
                t not in periods
                or _over_in_period(t, ids, members, link_of, event_time_ms, limits[t], periods[t])
            )
        ]
        if over:
            return "limit:" + min(over, key=lambda t: rules.sort_key((t, "")))
        if sum(len(values) for values in union.values()) > rules.max_identifiers:
            return "max_identifiers"
        if len(members) >= 2:
            if sum(p.merges for p in members) + len(members) - 1 > rules.max_merges:
                return "max_merges"
            for id_type in rules._hard_types:
                holders = [p.identifiers[id_type] for p in members if p.identifiers.get(id_type)]
                if len(holders) >= 2 and len(set().union(*holders)) >= 2:
                    return "conflict:" + id_type
        return None

    def _link(self, profile: Profile, new_ids: list[tuple[str, str]], linked_ms: int) -> bool:
        """Link identifiers to a profile (appending them to it, linked at linked_ms); True if
        there were any."""
        put_link = self.store.put_link
        add = profile.add
        for id_type, value in new_ids:
            add(id_type, value, linked_ms)
            put_link(profile.tenant_id, id_type, value, profile.profile_id)
        return bool(new_ids)

    def _create(
        self,
        tenant_id: str,
        ids: list[tuple[str, str]],
        event_time_ms: int,
        version: int,
        dropped: list[tuple[str, str, str]],
    ) -> Resolution:
        profile = Profile(
            profile_id_for(tenant_id, ids[0][0], ids[0][1]),
            tenant_id,
            {},
            event_time_ms,
            event_time_ms,
            version=version,
        )
        self._link(profile, ids, event_time_ms)
        self._claim(profile, ids, event_time_ms)
        self.store.put_profile(profile)
        return Resolution(profile.profile_id, (), tuple(dropped), tuple(ids))

    def _merge(
        self,
        tenant_id: str,
        ids: list[tuple[str, str]],
        members: list[Profile],
        link_of: dict[tuple[str, str], str],
        new_ids: list[tuple[str, str]],
        event_time_ms: int,
        message_id: str,
        version: int,
        dropped: list[tuple[str, str, str]],
    ) -> Resolution:
        """Merge every member into the winner: a known user first, then the oldest profile."""
        members.sort(
            key=lambda p: (not p.identifiers.get("user_id"), p.first_seen_ms, p.profile_id)
        )
        winner, losers = members[0], members[1:]
        losers.sort(key=lambda p: (p.first_seen_ms, p.profile_id))
        store = self.store
        merges: list[Merge] = []
        linked: list[tuple[str, str]] = []
        put_link = store.put_link
        for loser in losers:
            moved = []
            for id_type in loser.identifiers:
                for value, stamp in loser.stamps(id_type):
                    winner.add(id_type, value, stamp)  # keeps its own link time
                    put_link(tenant_id, id_type, value, winner.profile_id)
                    moved.append((id_type, value))
            linked.extend(moved)
            _merge_claims(winner.claims, loser.claims)
            rekeyed = (loser.profile_id, *loser.merged_from)
            winner.merges += 1 + loser.merges
            winner.merged_from.extend(rekeyed)
            winner.first_seen_ms = min(winner.first_seen_ms, loser.first_seen_ms)
            winner.last_seen_ms = max(winner.last_seen_ms, loser.last_seen_ms)
            loser.merged_into = winner.profile_id
            loser.version = version
            store.put_profile(loser)
            reason = next(f"{t}:{v}" for t, v in ids if link_of.get((t, v)) == loser.profile_id)
            merges.append(
                Merge(
                    tenant_id,
                    winner.profile_id,
                    loser.profile_id,
                    reason,
                    message_id,
                    event_time_ms,
                    version,
                    rekeyed,
                )
            )
        self._link(winner, new_ids, event_time_ms)
        linked.extend(new_ids)
        _touch(winner, event_time_ms)
        self._claim(winner, ids, event_time_ms)
        if self.rules._periods:
            self._seen_earlier(winner, ids, event_time_ms)
        winner.version = version
        store.put_profile(winner)
        return Resolution(
            winner.profile_id,
            tuple(merges),
            tuple(dropped),
            tuple(sorted(linked, key=self.rules.sort_key)),
        )


def _drop_index(
    ids: list[tuple[str, str]],
    link_of: dict[tuple[str, str], str],
    reason: str,
    hard_types: tuple[str, ...],
) -> int:
    """Which identifier to drop for a broken rule: the weakest one that causes the break.

    Segment Unify: when a limit would be exceeded, the lowest-priority identifier is dropped
    and the event stays on its profile. Dropping an identifier that does not cause the break
    only pushes the event to another profile, so this looks for the weakest cause (`ids` is
    sorted strongest first, so from the end), measured against the event's anchor: its
    strongest single-valued identifier (user_id), known or new, when it has one (the person
    the event names), else its strongest linked identifier (the profile it already is on).
    Causes, in tiers:

    1. limit:<type>: identifiers of that type not on the anchor's profile (the 6th phone);
       max_identifiers: any identifier not on it; max_merges / conflict: linked ones not on it;
    2. linked identifiers not on the anchor's profile (they bring a merge);
    3. failing both (a profile already over a lowered limit), the weakest identifier.
    """
    anchor = next((i for i in ids if i[0] in hard_types), None)
    if anchor is None:
        anchor = next((i for i in ids if i in link_of), None)
    anchor_pid = link_of.get(anchor) if anchor is not None else None

    def off_anchor(ident: tuple[str, str]) -> bool:
        if ident == anchor:
            return False
        return anchor_pid is None or link_of.get(ident) != anchor_pid

    if reason.startswith("limit:"):
        kind = reason.partition(":")[2]
        first = lambda i: i[0] == kind and off_anchor(i)  # noqa: E731
    elif reason == "max_identifiers":
        first = off_anchor
    else:
        first = lambda i: i in link_of and off_anchor(i)  # noqa: E731
    for test in (first, lambda i: i in link_of and off_anchor(i)):
        for index in range(len(ids) - 1, -1, -1):
            if test(ids[index]):
                return index
    return len(ids) - 1


def _over_in_period(
    id_type: str,
    ids: list[tuple[str, str]],
    members: list[Profile],
    link_of: dict[tuple[str, str], str],
    event_time_ms: int,
    limit: int,
    period_ms: int,
) -> bool:
    """Whether a type with a period ("5 weekly") goes over its limit at this event's time.

    Only values linked within one period of the event count; the event's new values are
    linked at its time, so they always count. Being over only counts when the event or the
    merge adds to it: with a rolling window a profile can hold more than the limit inside one
    window (values accepted a little less than a period apart on either side of it), and an
    event in that window that brings no new value of the type must not be refused for it.
    """
    in_window: dict[str, int] = {}  # value -> link time (a value is on one member only)
    largest = 0
    for profile in members:
        count = 0
        for value, stamp in profile.stamps(id_type):
            if abs(event_time_ms - stamp) < period_ms:
                count += 1
                in_window[value] = stamp
        largest = max(largest, count)
    for ident in ids:
        if ident[0] == id_type and ident not in link_of:
            in_window[ident[1]] = event_time_ms
    return len(in_window) > limit and len(in_window) > largest


def _merge_claims(into: dict[str, dict[str, int]], other: dict[str, dict[str, int]]) -> None:
    """A merged profile's person was identified with each value at the later of both times."""
    for id_type, by_value in other.items():
        mine = into.setdefault(id_type, {})
        for value, claimed in by_value.items():
            if mine.get(value, _NEVER) < claimed:
                mine[value] = claimed


def _with_moves(resolution: Resolution, moved_from: tuple[str, ...]) -> Resolution:
    """The resolution naming the profiles shared identifiers were taken from."""
    if not moved_from:
        return resolution
    return Resolution(
        resolution.profile_id, resolution.merges, resolution.dropped, resolution.linked, moved_from
    )


def _touch(profile: Profile, event_time_ms: int) -> bool:
    """Widen first/last seen to include the event; True if either moved."""
    if event_time_ms < profile.first_seen_ms:
        profile.first_seen_ms = event_time_ms
        return True
    if event_time_ms > profile.last_seen_ms:
        profile.last_seen_ms = event_time_ms
        return True
    return False
