"""Feature modules plugged into the app.

Each module listed here may expose ``routes`` (Starlette routes), ``async startup(rt)`` and
``async shutdown(rt)``; startup runs in order after the store and registry exist, shutdown in reverse.
Startup registers the feature's services in ``rt.services`` (the same dict node compilers see as
``CompileContext.services``).
"""

from __future__ import annotations

from types import ModuleType

from engine import experimentation, integrations, listen

FEATURES: tuple[ModuleType, ...] = (integrations, listen, experimentation)
