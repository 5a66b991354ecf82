"""Which served name answers a request: base model, adapter version, or alias (with canary).

The table lives in memory so resolving costs a dict lookup; the adapter service rebuilds it
from the registry. Flipping an alias replaces one dict entry: atomic on the event loop. Every
request holds its version's in-flight count from resolution to its last byte, so the service
can unload a version only once it has drained.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class AliasDefaults:
    """What an alias adds to requests that do not say otherwise."""

    response_format: dict[str, Any] | None = None
    retrieval: dict[str, Any] | None = None


NO_DEFAULTS = AliasDefaults()


@dataclass(frozen=True, slots=True)
class Route:
    """``served_name`` goes to vLLM; ``alias`` is what the client called, if an alias."""

    served_name: str
    alias: str | None = None
    defaults: AliasDefaults = NO_DEFAULTS


class Resolver(Protocol):
    """What serving needs from the adapter side: hold a route, let it go, list aliases."""

    async def route(self, model: str, user: str | None) -> Route | None: ...

    def release(self, route: Route) -> None: ...

    def alias_names(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Split:
    """An alias's targets as cumulative weights, for one bucket lookup per request."""

    targets: tuple[tuple[str, int], ...]  # (served_name, cumulative upper bound), bound 100

    @classmethod
    def of(cls, weights: dict[str, int]) -> Split:
        bound, cumulative = 0, []
        for served_name, weight in sorted(weights.items()):
            if weight > 0:
                bound += weight
                cumulative.append((served_name, bound))
        return cls(tuple(cumulative))

    def pick(self, user: str | None) -> str:
        """The same ``user`` always lands on the same target; no user, a random one."""
        if len(self.targets) == 1:
            return self.targets[0][0]
        total = self.targets[-1][1]
        if user:
            bucket = zlib.crc32(user.encode()) % total
        else:
            bucket = random.randrange(total)
        for served_name, bound in self.targets:
            if bucket < bound:
                return served_name
        return self.targets[-1][0]

    @property
    def served_names(self) -> set[str]:
        return {name for name, _ in self.targets}


class ModelRouter:
    """Aliases and adapter versions the gateway can route to, and what each has in flight."""

    def __init__(self) -> None:
        self._aliases: dict[str, Split] = {}
        self._defaults: dict[str, AliasDefaults] = {}
        self._versions: set[str] = set()
        self._in_flight: defaultdict[str, int] = defaultdict(int)
        self._drained: dict[str, asyncio.Event] = {}

    # --- table -------------------------------------------------------------------------------
    def set_alias(
        self, alias: str, weights: dict[str, int], defaults: AliasDefaults = NO_DEFAULTS
    ) -> None:
        self._defaults[alias] = defaults
        self._aliases[alias] = Split.of(weights)

    def remove_alias(self, alias: str) -> None:
        self._aliases.pop(alias, None)
        self._defaults.pop(alias, None)

    def add_version(self, served_name: str) -> None:
        self._versions.add(served_name)

    def remove_version(self, served_name: str) -> None:
        self._versions.discard(served_name)

    @property
    def aliases(self) -> dict[str, set[str]]:
        return {alias: split.served_names for alias, split in self._aliases.items()}

    @property
    def versions(self) -> set[str]:
        return set(self._versions)

    def aliased(self) -> set[str]:
        """Served names some alias points at."""
        return set().union(*(split.served_names for split in self._aliases.values()))

    # --- requests ----------------------------------------------------------------------------
    def resolve(self, model: str, user: str | None = None) -> Route | None:
        """The route for ``model`` if it is an alias or a known version, else ``None``."""
        split = self._aliases.get(model)
        if split is not None:
            defaults = self._defaults.get(model, NO_DEFAULTS)
            return Route(split.pick(user), alias=model, defaults=defaults)
        if model in self._versions:
            return Route(model)
        return None

    def acquire(self, served_name: str) -> None:
        self._in_flight[served_name] += 1
        event = self._drained.get(served_name)
        if event is not None:
            event.clear()

    def release(self, served_name: str) -> None:
        self._in_flight[served_name] -= 1
        if self._in_flight[served_name] <= 0:
            del self._in_flight[served_name]
            event = self._drained.get(served_name)
            if event is not None:
                event.set()

    def in_flight(self, served_name: str) -> int:
        return self._in_flight.get(served_name, 0)

    def in_flight_counts(self) -> dict[str, int]:
        """Requests held per served name now (names with none left out)."""
        return dict(self._in_flight)

    async def wait_drained(self, served_name: str) -> None:
        """Return once no request holds ``served_name``."""
        while self.in_flight(served_name) > 0:
            event = self._drained.setdefault(served_name, asyncio.Event())
            event.clear()
            await event.wait()
        self._drained.pop(served_name, None)
