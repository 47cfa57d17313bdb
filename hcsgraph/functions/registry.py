"""The function registry: a name maps to one function per memory type.

The built-in functions register themselves when :mod:`hcsgraph.functions` is imported; users add
their own with :func:`register`. The registry is the one documented module-level table of this
package.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hcsgraph.config import MemoryType, coerce_enum
from hcsgraph.pipeline.contracts import get_special_outputs

if TYPE_CHECKING:
    import pandas as pd


class UnknownFunctionError(KeyError):
    """A function name (or a memory type of it) that the registry does not hold."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class FunctionEntry:
    """One registered name: its versions per memory type and a one-line description."""

    name: str
    description: str = ""
    versions: dict[MemoryType, Callable[..., Any]] = field(default_factory=dict)


def _memory_type_of(func: Callable[..., Any]) -> MemoryType | None:
    value = getattr(func, "input_memory_type", None)
    return None if value is None else coerce_enum(MemoryType, value, "input_memory_type")


def _first_line(func: Callable[..., Any]) -> str:
    doc = (getattr(func, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


class FunctionRegistry:
    """Name → {MemoryType: function}."""

    def __init__(self) -> None:
        self._entries: dict[str, FunctionEntry] = {}

    def register(
        self,
        name: str,
        func: Callable[..., Any],
        memory_type: MemoryType | str | None = None,
        *,
        description: str | None = None,
        replace: bool = False,
    ) -> Callable[..., Any]:
        """Register ``func`` as the ``memory_type`` version of ``name``.

        ``memory_type`` defaults to the ``input_memory_type`` a memory decorator set on ``func``.
        Registering a version that already exists raises ``ValueError`` unless ``replace=True``.
        Returns ``func``.
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"register: function name {name!r} must be a Python identifier")
        if not callable(func):
            raise TypeError(f"register: {name!r}: {func!r} is not callable")
        if memory_type is None:
            memory_type = _memory_type_of(func)
            if memory_type is None:
                raise ValueError(
                    f"register: {name!r}: no memory type given and {getattr(func, '__name__', func)!r} "
                    "carries none; decorate it (e.g. @numpy) or pass memory_type="
                )
        memory_type = coerce_enum(MemoryType, memory_type, "memory_type")
        entry = self._entries.setdefault(name, FunctionEntry(name))
        if memory_type in entry.versions and not replace and entry.versions[memory_type] is not func:
            raise ValueError(
                f"register: {name!r} already has a {memory_type.value} version; pass replace=True to replace it"
            )
        if not hasattr(func, "oom_splittable"):
            try:
                func.oom_splittable = True  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
        entry.versions[memory_type] = func
        if description is not None:
            entry.description = description
        elif not entry.description:
            entry.description = _first_line(func)
        return func

    def unregister(self, name: str) -> None:
        """Remove every version of ``name``."""
        self._entry(name)
        del self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def _entry(self, name: str) -> FunctionEntry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownFunctionError(
                f"unknown function {name!r}{hint} (hcsgraph.functions.list() shows what exists)"
            ) from None

    def get(self, name: str, memory_type: MemoryType | str = MemoryType.NUMPY) -> Callable[..., Any]:
        """The ``memory_type`` version of ``name``; :class:`UnknownFunctionError` when absent."""
        entry = self._entry(name)
        memory_type = coerce_enum(MemoryType, memory_type, "memory_type")
        try:
            return entry.versions[memory_type]
        except KeyError:
            have = ", ".join(m.value for m in entry.versions)
            raise UnknownFunctionError(
                f"function {name!r} has no {memory_type.value} version (available: {have})"
            ) from None

    def available_memory_types(self, name: str) -> tuple[MemoryType, ...]:
        """The memory types ``name`` has a version for, in ``MemoryType`` order."""
        entry = self._entry(name)
        return tuple(m for m in MemoryType if m in entry.versions)

    def name_of(self, func: Callable[..., Any]) -> str | None:
        """The registered name of ``func`` (any version), or None."""
        for entry in self._entries.values():
            if any(f is func for f in entry.versions.values()):
                return entry.name
        return None

    def table(self) -> pd.DataFrame:
        """One row per name: name, memory types, description, special outputs."""
        import pandas as pd

        rows = []
        for name in self.names():
            entry = self._entries[name]
            specials: list[str] = []
            for func in entry.versions.values():
                specials.extend(s for s in get_special_outputs(func) if s not in specials)
            rows.append(
                {
                    "name": name,
                    "memory_types": ", ".join(m.value for m in self.available_memory_types(name)),
                    "description": entry.description,
                    "special_outputs": ", ".join(specials),
                }
            )
        return pd.DataFrame(rows, columns=["name", "memory_types", "description", "special_outputs"])


registry = FunctionRegistry()
"""The package-wide function registry."""
