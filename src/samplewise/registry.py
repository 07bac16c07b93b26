"""One registry class for every pluggable family (datasets, models, attacks, objectives, scores,
selectors).

Example:
    >>> MODELS = Registry("model")
    >>> @MODELS.register("mlp", help="two-layer perceptron")
    ... def mlp(**kw): ...
    >>> MODELS.get("mlp") is mlp
    True

Names may also be *prefix* entries such as ``npz:PATH`` or ``timm:NAME``: the registered function
receives the part after the colon as its first argument (see :meth:`Registry.resolve`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import SamplewiseError


@dataclass
class Entry:
    name: str
    obj: Any
    help: str = ""
    meta: dict = field(default_factory=dict)
    prefix: bool = False


class Registry:
    """A named collection of components with a clear error for unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, help: str = "", prefix: bool = False, **meta) -> Callable:
        """Decorator registering ``obj`` under ``name`` (``prefix=True``: ``name:ARG`` entries)."""

        def deco(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            doc = help or (obj.__doc__ or "").strip().splitlines()[0:1]
            self._entries[name] = Entry(name, obj, doc if isinstance(doc, str) else "".join(doc), meta, prefix)
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (e.g. a plug-in a test registered); unknown names are an error."""
        if name not in self._entries:
            raise SamplewiseError(f"unknown {self.kind} '{name}'; choose from: {', '.join(self.names())}")
        del self._entries[name]

    def names(self, include_prefix: bool = True) -> list[str]:
        """Registered names in registration order (prefix entries shown as ``name:ARG``)."""
        return [e.name + (":ARG" if e.prefix else "") for e in self._entries.values()
                if include_prefix or not e.prefix]

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
        except SamplewiseError:
            return False
        return True

    def resolve(self, name: str) -> tuple[Entry, str | None]:
        """Return ``(entry, arg)``; ``arg`` is the text after ``prefix:`` for prefix entries."""
        if not isinstance(name, str) or not name:
            raise SamplewiseError(f"{self.kind} name must be a non-empty string, got {name!r}")
        entry = self._entries.get(name)
        if entry is not None and not entry.prefix:
            return entry, None
        head, sep, rest = name.partition(":")
        entry = self._entries.get(head)
        if sep and entry is not None and entry.prefix:
            if not rest:
                raise SamplewiseError(f"{self.kind} '{name}' needs a value after '{head}:'")
            return entry, rest
        raise SamplewiseError(
            f"unknown {self.kind} '{name}'; choose from: {', '.join(self.names())}")

    def get(self, name: str) -> Any:
        """The registered object (for prefix entries, the function taking ``ARG`` first)."""
        return self.resolve(name)[0].obj

    def build(self, name: str, *args, **kwargs) -> Any:
        """Call the registered object; prefix entries get their argument first."""
        entry, arg = self.resolve(name)
        if arg is not None:
            return entry.obj(arg, *args, **kwargs)
        return entry.obj(*args, **kwargs)

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
