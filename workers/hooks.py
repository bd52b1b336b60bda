"""Python hooks: the user's own functions, run by the workers for the events they name.

```python
# myapp/tavus_hooks.py, loaded with TAVUS_HOOKS=myapp.tavus_hooks
from workers.hooks import on

@on("application.transcription_ready")
def analyze(event):
    transcript = event.body["properties"]["transcript"]
```

``@on(...)`` takes conversation event types, kinds (``objective``), prefix patterns
(``application.*``) or ``"*"``. Each (event, hook) is its own task on the ``hooks`` queue after
the event is committed: retried with backoff when it raises, never run again once it succeeded.
Delivery is at least once (a worker may die between the hook's return and its record), so a
hook must be idempotent: ``event.id`` is the key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from schemas.extensions import import_modules

Hook = Callable[[Any], Any]


@dataclass(frozen=True)
class Registered:
    name: str  # "hook:<module>.<function>", what `deliveries --destination` takes
    patterns: tuple[str, ...]
    function: Hook


HOOKS: dict[str, Registered] = {}


def on(*patterns: str) -> Callable[[Hook], Hook]:
    """Run the decorated function for every event matching one of ``patterns``."""
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise TypeError("@on(...) takes one or more event types, kinds, patterns or '*'")

    def register(function: Hook) -> Hook:
        name = f"hook:{function.__module__}.{function.__qualname__}"
        known = HOOKS.get(name)
        # A module imported twice registers the same function again: keep the patterns whole.
        merged = tuple(dict.fromkeys((*(known.patterns if known else ()), *patterns)))
        HOOKS[name] = Registered(name, merged, function)
        return function

    return register


class HookModuleError(RuntimeError):
    """A module named in TAVUS_HOOKS cannot be imported: the worker must not start without it."""


def load(modules: Iterable[str]) -> list[str]:
    """Import each hook module (registering its ``@on`` functions); the names registered."""
    import_modules(modules, "TAVUS_HOOKS", HookModuleError)
    return sorted(HOOKS)
