"""Declare the memory types a processing function takes and returns.

``@torch`` (or ``@torch(oom_recovery=False)``) marks a function as computing in torch. The
decorated function stays directly callable: it converts its first argument to the input type and
its result to the output type. Nothing is rescaled: a float32 result stays float32 with the same
values. Where a function also returns special outputs (``@special_outputs``), only the first
element, the image, is converted.

The wrapper carries ``input_memory_type``, ``output_memory_type`` (:class:`MemoryType`) and
``oom_recovery``; the pipeline reads them. Decorating never imports the library; calling a
function whose library is missing raises :class:`MissingLibraryError` (an ``ImportError``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

from hcsgraph.config import MemoryType
from hcsgraph.memory.convert import convert_to
from hcsgraph.memory.libraries import MissingLibraryError, is_installed
from hcsgraph.memory.types import as_memory_type

F = TypeVar("F", bound=Callable[..., Any])


def _declare(func: F, input_type: MemoryType, output_type: MemoryType, oom_recovery: bool) -> F:
    if not callable(func):
        raise TypeError(f"memory type decorators apply to functions, got {type(func).__qualname__}")

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for memory_type in (input_type, output_type):
            if not is_installed(memory_type):
                raise MissingLibraryError(memory_type, f"needed by {func.__qualname__}")
        if args:
            args = (convert_to(args[0], input_type), *args[1:])
        result = func(*args, **kwargs)
        if getattr(wrapper, "special_outputs", None) and isinstance(result, tuple):
            return (convert_to(result[0], output_type), *result[1:])
        return convert_to(result, output_type)

    wrapper.input_memory_type = input_type  # type: ignore[attr-defined]
    wrapper.output_memory_type = output_type  # type: ignore[attr-defined]
    wrapper.oom_recovery = bool(oom_recovery)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _library_decorator(memory_type: MemoryType, default_oom_recovery: bool) -> Callable[..., Any]:
    @overload
    def decorator(func: F) -> F: ...
    @overload
    def decorator(*, oom_recovery: bool = ...) -> Callable[[F], F]: ...

    def decorator(func: F | None = None, *, oom_recovery: bool = default_oom_recovery) -> Any:
        if func is None:
            return lambda f: _declare(f, memory_type, memory_type, oom_recovery)
        return _declare(func, memory_type, memory_type, oom_recovery)

    decorator.__name__ = decorator.__qualname__ = memory_type.value
    decorator.__doc__ = (
        f"Declare a function that takes and returns {memory_type.value} arrays.\n\n"
        f"Use bare (``@{memory_type.value}``) or with options "
        f"(``@{memory_type.value}(oom_recovery={not default_oom_recovery})``)."
    )
    return decorator


numpy = _library_decorator(MemoryType.NUMPY, default_oom_recovery=False)
cupy = _library_decorator(MemoryType.CUPY, default_oom_recovery=True)
torch = _library_decorator(MemoryType.TORCH, default_oom_recovery=True)
tensorflow = _library_decorator(MemoryType.TENSORFLOW, default_oom_recovery=True)
jax = _library_decorator(MemoryType.JAX, default_oom_recovery=True)
pyclesperanto = _library_decorator(MemoryType.PYCLESPERANTO, default_oom_recovery=True)


def memory_types(
    input_type: MemoryType | str = MemoryType.NUMPY,
    output_type: MemoryType | str | None = None,
    oom_recovery: bool = False,
) -> Callable[[F], F]:
    """Declare a function that takes ``input_type`` and returns ``output_type`` (default: the same)."""
    source = as_memory_type(input_type)
    target = as_memory_type(output_type) if output_type is not None else source
    return lambda func: _declare(func, source, target, oom_recovery)
