"""Every Redis key Arbiter uses is built here, and only here.

Cluster rule: all keys of one guest share the hash tag ``{g:<ref>}`` so a guest is read and written in
one slot and one round trip; all keys of one model share ``{m:<key>}``. Global indexes live in their
own slots and are never touched in the same script as a guest.
"""

from __future__ import annotations

PREFIX = "arb"


# --- models -------------------------------------------------------------------------------------
def model_versions(key: str) -> str:
    """Hash: version number → stored version document (JSON)."""
    return f"{PREFIX}:{{m:{key}}}:versions"


def model_meta(key: str) -> str:
    """Hash: ``latest`` (version counter), ``rev`` (change counter), ``pointers`` (JSON: production, test, history)."""
    return f"{PREFIX}:{{m:{key}}}:meta"


def model_states(key: str) -> str:
    """Hash: version number → lifecycle state."""
    return f"{PREFIX}:{{m:{key}}}:states"


MODEL_INDEX = f"{PREFIX}:models"
"""Set of model keys."""

MODEL_CHANNEL = f"{PREFIX}:models:changed"
"""Pub/sub channel: a model key whose lifecycle changed, so peers drop their cached pointer."""


def resource_channel(kind: str) -> str:
    """Pub/sub channel: the key of a ``kind`` resource that was written or deleted, so peers reload it."""
    return f"{PREFIX}:res:{kind}:changed"


# --- guests -------------------------------------------------------------------------------------
def guest(ref: str) -> str:
    """Hash of one guest: ``profile``, ``sessions``, ``orders`` … each a JSON document."""
    return f"{PREFIX}:{{g:{ref}}}"


def guest_part(ref: str, part: str) -> str:
    """Further keys of one guest (streams, sets), same slot as :func:`guest`."""
    return f"{PREFIX}:{{g:{ref}}}:{part}"


def identifier(provider: str, value: str) -> str:
    """String: identifier (e.g. email) → guest ref."""
    return f"{PREFIX}:id:{provider}:{value}"


# --- decisions ----------------------------------------------------------------------------------
DECISION_LOG = f"{PREFIX}:decisions"
"""Stream of served (and shadow) decisions, capped; the input for replay and off-line evaluation."""


# --- resources ----------------------------------------------------------------------------------
def resources(kind: str) -> str:
    """Hash: resource key → document, one hash per kind (``connection``, ``experiment``…)."""
    return f"{PREFIX}:res:{{{kind}}}"


# --- events, sessions, identity (the listen feature) --------------------------------------------
def guest_applied(ref: str) -> str:
    """Sorted set: tokens (event refs, merge ids) already applied to this guest, scored by time; capped."""
    return guest_part(ref, "applied")


def event_stream(shard: int) -> str:
    """Stream: the durable event log, one per shard so a cluster spreads the write load."""
    return f"{PREFIX}:{{ev:{shard}}}:log"


def event_marker(shard: int, ref: str) -> str:
    """String with a TTL: event ref → its stream entry id (idempotent appends), in its stream's slot."""
    return f"{PREFIX}:{{ev:{shard}}}:ref:{ref}"


ACTIVE_SESSIONS = f"{PREFIX}:sessions:active"
"""Sorted set: guest ref → last event time (ms) of a guest with an open session; the sweeper's work list."""

ABANDONED = f"{PREFIX}:abandoned"
"""Stream: abandoned-cart records (a session closed with a cart and no order), for the cart trigger."""


# --- experiments --------------------------------------------------------------------------------
# Per-arm keys each get their own hash tag so a busy experiment's counters spread across cluster slots.
def experiment_tally(experiment: str, arm: str) -> str:
    """Hash of one arm's counters: totals ``n`` (exposures), ``c`` (rewarded), ``s`` (reward sum),
    ``q`` (sum of squares), and the same per allocation epoch as ``n@<epoch>``, ``c@<epoch>``…"""
    return f"{PREFIX}:{{x:{experiment}:{arm}}}:tally"


def experiment_epochs(experiment: str) -> str:
    """Hash: allocation epoch → the arms' weights in that epoch (JSON), written once per epoch."""
    return f"{PREFIX}:{{x:{experiment}}}:epochs"


def experiment_minute(experiment: str, minute: int, shard: int) -> str:
    """Hash of the attribution units of the decisions served in one minute (Unix minutes), one shard of
    them: decision id (its 16 bytes) → ``<rewarded>|<window_s>|<epoch>|<arm>``, or ``@<unit>`` where the unit is
    a guest; ``p:<decision id>`` → a reward that arrived before its unit. Expires with its last unit's window.
    A field costs a fraction of a key of its own, and units grow with traffic (see ``engine.ledger``)."""
    return f"{PREFIX}:{{xm:{experiment}:{minute}:{shard}}}"


def experiment_unit(experiment: str, unit: str) -> str:
    """Hash of one attribution unit: a guest in a fixed split (or a decision whose id is not a timed id, from
    before units were filed by minute): ``arm``, ``epoch``, ``at_ms``, ``deadline_ms``, ``rewarded``; expires
    after the attribution window."""
    return f"{PREFIX}:{{xu:{experiment}:{unit}}}"


def experiment_parked(experiment: str, unit: str) -> str:
    """String: a reward that arrived before its unit was written (value), same slot as the unit."""
    return f"{experiment_unit(experiment, unit)}:parked"


def experiment_decision(experiment: str, decision_id: str) -> str:
    """String: decision id → its attribution unit, where the unit is not the decision itself (ids from before
    units were filed by minute; newer decisions point at their unit from :func:`experiment_minute`)."""
    return f"{PREFIX}:{{xu:{experiment}:{decision_id}}}:unit"
