"""Names for the shapes that cross module boundaries, defined once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""A value orjson can serialise: dict, list, str, int, float, bool or None."""

JSONObject: TypeAlias = dict[str, Any]

Scope: TypeAlias = Mapping[str, Any]
"""What an expression sees: ``guest``, ``context``, declared inputs and earlier node outputs by id."""
