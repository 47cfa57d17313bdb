"""Special outputs and inputs: side results a function hands to later steps.

A function decorated with ``@special_outputs("a", ("b", materializer))`` returns
``(main_output, a, b)``. Each special output reaches any later step in the same group whose
function declares it with ``@special_inputs("a")``: that function receives it as the keyword
argument ``a``. A materializer ``(data, path, filemanager) -> str`` writes the value to disk or
Zarr after the step runs and returns the path of the main file it wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

Materializer = Callable[[Any, str, Any], str]
F = TypeVar("F", bound=Callable[..., Any])


def special_outputs(*outputs: str | tuple[str, Materializer]) -> Callable[[F], F]:
    """Declare the special outputs of a function, in the order it returns them after the image."""
    declared: dict[str, Materializer | None] = {}
    for item in outputs:
        if isinstance(item, str):
            name, materializer = item, None
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and callable(item[1]):
            name, materializer = item
        else:
            raise TypeError(f"special_outputs: {item!r} must be a name or a (name, materializer) pair")
        if name in declared:
            raise ValueError(f"special_outputs: {name!r} is declared twice")
        declared[name] = materializer

    def decorate(func: F) -> F:
        func.special_outputs = dict(declared)  # type: ignore[attr-defined]
        return func

    return decorate


def special_inputs(*names: str) -> Callable[[F], F]:
    """Declare the special outputs of earlier steps that a function takes as keyword arguments."""
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"special_inputs: {name!r} must be a non-empty name")

    def decorate(func: F) -> F:
        func.special_inputs = tuple(names)  # type: ignore[attr-defined]
        return func

    return decorate


def get_special_outputs(func: Callable[..., Any]) -> dict[str, Materializer | None]:
    """The special outputs a function declares (name → materializer or None)."""
    return dict(getattr(func, "special_outputs", {}))


def get_special_inputs(func: Callable[..., Any]) -> tuple[str, ...]:
    """The special inputs a function declares."""
    return tuple(getattr(func, "special_inputs", ()))
