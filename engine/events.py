"""Behavioural events: what a storefront may send, checked once at the door.

An event is validated into an immutable :class:`Event` before anything is written, so an invalid event is
a 400 with a pointer to the bad field and a valid one never fails later for its shape. The field names are
the Sitecore CDP wire names (``browser_id``, ``pos``, ``ext``…) so the Cloud SDK's bodies parse unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.errors import BadRequest
from engine.ids import new_id
from engine.types import JSONObject

STANDARD_TYPES = frozenset({"VIEW", "SEARCH", "ADD", "CLEAR_CART", "CONFIRM", "CHECKOUT", "ORDER_CHECKOUT", "IDENTITY"})
ORDER_TYPES = frozenset({"CONFIRM", "CHECKOUT", "ORDER_CHECKOUT"})
REQUIRED = ("type", "channel", "browser_id", "pos", "language", "currency", "page")
MAX_EXT_KEYS = 50
MAX_STRING = 512
MAX_REF = 128
MAX_IDENTIFIERS = 10
CUSTOM_TYPE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
# Fields the engine interprets; anything else a custom event carries is kept verbatim in ``data``.
KNOWN = frozenset({*REQUIRED, "ref", "requested_at", "ext", "identifiers", "product", "order", "client_key"})
PERSON_FIELDS = (
    "email", "firstname", "lastname", "title", "gender", "dob", "mobile", "phone",
    "street", "city", "state", "country", "postal_code",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Event:
    ref: str
    """Idempotency key: the client's, or one generated at the door. A repeated ref is applied once."""
    type: str
    channel: str
    browser_id: str
    pos: str
    language: str
    currency: str
    page: str
    at_ms: int
    ext: JSONObject = field(default_factory=dict)
    identifiers: tuple[JSONObject, ...] = ()
    product: JSONObject | None = None
    order: JSONObject | None = None
    data: JSONObject = field(default_factory=dict)
    """Every other field the client sent (UTM parameters, person fields, custom payloads)."""

    def as_json(self) -> JSONObject:
        out: JSONObject = {
            "ref": self.ref, "type": self.type, "channel": self.channel, "browser_id": self.browser_id,
            "pos": self.pos, "language": self.language, "currency": self.currency, "page": self.page,
            "at_ms": self.at_ms,
        }  # fmt: skip
        if self.ext:
            out["ext"] = self.ext
        if self.identifiers:
            out["identifiers"] = list(self.identifiers)
        if self.product is not None:
            out["product"] = self.product
        if self.order is not None:
            out["order"] = self.order
        if self.data:
            out["data"] = self.data
        return out

    @classmethod
    def from_json(cls, raw: JSONObject) -> Event:
        """Rebuild an event this module validated earlier (from the event log); no checks repeated."""
        return cls(
            raw["ref"], raw["type"], raw["channel"], raw["browser_id"], raw["pos"], raw["language"],
            raw["currency"], raw["page"], raw["at_ms"], raw.get("ext", {}), tuple(raw.get("identifiers", ())),
            raw.get("product"), raw.get("order"), raw.get("data", {}),
        )  # fmt: skip


def parse_event(raw: Any, pointer: str, *, now_ms: int) -> Event:
    """Validate one wire event; raise :class:`BadRequest` pointing at the first bad field."""
    if not isinstance(raw, dict):
        raise BadRequest("an event must be a JSON object", pointer=pointer)
    values: dict[str, str] = {}
    for name in REQUIRED:
        value = raw.get(name)
        if value is None:
            raise BadRequest(f"'{name}' is required", pointer=f"{pointer}/{name}")
        if not isinstance(value, str) or len(value) > MAX_STRING:
            raise BadRequest(
                f"'{name}' must be a string of at most {MAX_STRING} characters",
                pointer=f"{pointer}/{name}",
            )
        values[name] = value
    kind = values["type"]
    if kind not in STANDARD_TYPES and not CUSTOM_TYPE.match(kind):
        raise BadRequest(
            f"unknown event type '{kind}': a standard type or an upper-case custom name (A-Z, 0-9, _)",
            pointer=f"{pointer}/type",
        )
    for name in ("browser_id", "channel", "pos", "language", "currency"):
        if not values[name] or len(values[name]) > MAX_REF:
            raise BadRequest(f"'{name}' must be 1 to {MAX_REF} characters", pointer=f"{pointer}/{name}")
    ref = raw.get("ref")
    if ref is None:
        ref = new_id()
    elif not isinstance(ref, str) or not ref or len(ref) > MAX_REF:
        raise BadRequest(f"'ref' must be 1 to {MAX_REF} characters", pointer=f"{pointer}/ref")
    identifiers = parse_identifiers(raw.get("identifiers"), f"{pointer}/identifiers", required=kind == "IDENTITY")
    return Event(
        ref=ref,
        type=kind,
        channel=values["channel"],
        browser_id=values["browser_id"],
        pos=values["pos"],
        language=values["language"],
        currency=values["currency"],
        page=values["page"],
        # Sessions are timed by the server's clock: a client's clock may be wrong or replayed.
        at_ms=now_ms,
        ext=parse_ext(raw.get("ext"), f"{pointer}/ext"),
        identifiers=identifiers,
        product=_object(raw, "product", pointer, required=kind == "ADD"),
        order=_object(raw, "order", pointer, required=False),
        data={
            **{k: v for k, v in raw.items() if k not in KNOWN},
            "requested_ms": _requested_at(raw.get("requested_at"), f"{pointer}/requested_at", now_ms),
        },
    )


def parse_ext(raw: Any, pointer: str) -> JSONObject:
    """Extension data: at most 50 flat keys with scalar values (Sitecore's limit, so data stays portable)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest("'ext' must be an object of scalar values", pointer=pointer)
    if len(raw) > MAX_EXT_KEYS:
        raise BadRequest(f"'ext' has {len(raw)} keys; at most {MAX_EXT_KEYS} are allowed", pointer=pointer)
    for key, value in raw.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise BadRequest(
                "extension values must be flat scalars (string, number, boolean, null)", pointer=f"{pointer}/{key}"
            )
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise BadRequest(f"at most {MAX_STRING} characters", pointer=f"{pointer}/{key}")
    return dict(raw)


def parse_identifiers(raw: Any, pointer: str, *, required: bool) -> tuple[JSONObject, ...]:
    if raw is None or raw == []:
        if required:
            raise BadRequest("an IDENTITY event needs at least one {provider, id} identifier", pointer=pointer)
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_IDENTIFIERS:
        raise BadRequest(f"'identifiers' must be an array of at most {MAX_IDENTIFIERS} objects", pointer=pointer)
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise BadRequest("an identifier must be an object {provider, id}", pointer=f"{pointer}/{i}")
        for name in ("provider", "id"):
            value = item.get(name)
            if not isinstance(value, str) or not value or len(value) > MAX_STRING:
                raise BadRequest(f"'{name}' must be a non-empty string", pointer=f"{pointer}/{i}/{name}")
        out.append({"provider": item["provider"].lower(), "id": item["id"]})
    return tuple(out)


def _object(raw: JSONObject, name: str, pointer: str, *, required: bool) -> JSONObject | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise BadRequest(f"this event type needs '{name}'", pointer=f"{pointer}/{name}")
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"'{name}' must be an object", pointer=f"{pointer}/{name}")
    return value


def _requested_at(raw: Any, pointer: str, now_ms: int) -> int:
    """When the client says the event happened; the server's clock when it says nothing."""
    if raw is None or raw == "":
        return now_ms
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            pass
    raise BadRequest("'requested_at' must be an ISO 8601 timestamp or epoch milliseconds", pointer=pointer)
