"""Declare the memory types a processing function takes and returns.

``@torch`` (or ``@torch(oom_recovery=False)``) marks a function as computing in torch. The
decorated function stays directly callable: it converts its first argument to the input type and
its result to the output type. Nothing is rescaled: a float32 result stays float32 with the same
values. Where a function also returns special outputs (``@special_outputs``), only the first
element, the image, is converted.

The wrapper carries ``input_memory_type``, ``output_memory_type`` (:class:`MemoryType`) and
``oom_recovery``; the pipeline reads them. Decorating never imports the library; calling a
function whose library is missing raises :class:`MissingLibraryError` (an ``ImportError``).

pyclesperanto comes as two packages whose arrays do not mix: ``pyclesperanto`` (>= 0.25) and
``pyclesperanto_prototype``. ``@pyclesperanto(package="pyclesperanto_prototype")`` (or
``package="prototype"``) declares a function written with the prototype; the wrapper then hands
it prototype arrays, copying through host memory when the stack is a ``pyclesperanto`` array
(and the other way round). Without ``package`` the wrapper looks at what the function refers to
(its module globals, closure and ``import`` statements): a function that refers to exactly one
of the two packages gets that package's arrays; any other function gets the arrays of the
package hcsgraph uses. The wrapper also carries ``pyclesperanto_package`` (the declared name, or
None). When a function still fails inside one package with the other package's arrays, the
wrapper raises :class:`PyclesperantoPackageError`, which names both packages and how to choose.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import CodeType, ModuleType
from typing import Any, TypeVar, overload

from hcsgraph.config import MemoryType
from hcsgraph.memory.convert import convert_to
from hcsgraph.memory.libraries import (
    CLE_PACKAGES,
    MissingLibraryError,
    is_installed,
    normalize_pyclesperanto_package,
    resolve_pyclesperanto_package,
)
from hcsgraph.memory.types import _CLE_PACKAGE_ROOTS, as_memory_type, pyclesperanto_package_of

F = TypeVar("F", bound=Callable[..., Any])

# Module roots of each pyclesperanto package's own code (for references and tracebacks).
_CLE_CODE_ROOTS = {root: package for root, package in _CLE_PACKAGE_ROOTS.items() if root != "pyopencl"}
_CLE_LABELS = {"pyclesperanto": "pyclesperanto (>= 0.25)", "pyclesperanto_prototype": "pyclesperanto_prototype"}


class PyclesperantoPackageError(TypeError):
    """A pyclesperanto function failed inside one pyclesperanto package with the other package's arrays."""

    def __init__(self, function: str, got: str, failed_in: str, detail: str = "") -> None:
        self.function = function
        self.got = got
        self.failed_in = failed_in
        self.detail = detail
        super().__init__(
            f"{function} got {_CLE_LABELS.get(got, got)} arrays but failed inside {_CLE_LABELS.get(failed_in, failed_in)}"
            + (f" ({detail})" if detail else "")
            + f"; the arrays of pyclesperanto (>= 0.25) and pyclesperanto_prototype do not mix. Declare the "
            f"package the function uses, @pyclesperanto(package={failed_in!r}), and hcsgraph hands it "
            f"{failed_in} arrays (a host copy when the stack is a {got} array); or convert inside the "
            f"function with hcsgraph.memory.to_pyclesperanto_package(stack, {failed_in!r}). "
            f"HCSGRAPH_PYCLESPERANTO={failed_in} makes {failed_in} the package every pyclesperanto "
            "conversion produces."
        )

    def __reduce__(self):  # rebuilt from its fields, so that it travels from dask workers
        return (type(self), (self.function, self.got, self.failed_in, self.detail))


def _code_objects(code: CodeType) -> list[CodeType]:
    found, todo = [], [code]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(const for const in current.co_consts if isinstance(const, CodeType))
    return found


def _package_of_value(value: Any) -> str | None:
    if isinstance(value, ModuleType):
        module = value.__name__
    else:
        module = getattr(value, "__module__", None)
        if not isinstance(module, str):
            module = getattr(type(value), "__module__", "") or ""
    return _CLE_CODE_ROOTS.get(module.partition(".")[0])


def referenced_pyclesperanto_packages(func: Callable[..., Any]) -> set[str]:
    """The pyclesperanto packages ``func`` belongs to or its code refers to (globals, closure, imports).

    Looks at names only: imports nothing and calls nothing. Empty for callables without code
    from elsewhere.
    """
    try:
        target = inspect.unwrap(func)
    except ValueError:  # a cycle of __wrapped__
        target = func
    packages = {
        package
        for candidate in (func, target)
        if (package := _CLE_CODE_ROOTS.get(str(getattr(candidate, "__module__", None) or "").partition(".")[0]))
    }  # a package's own function, decorated directly: @pyclesperanto(cle.gaussian_blur)
    code = getattr(target, "__code__", None)
    if not isinstance(code, CodeType):
        return packages
    namespace = getattr(target, "__globals__", {}) or {}
    for current in _code_objects(code):
        for name in current.co_names:
            if name in CLE_PACKAGES:  # import pyclesperanto[_prototype] inside the function
                packages.add(name)
            if name in namespace:
                package = _package_of_value(namespace[name])
                if package is not None:
                    packages.add(package)
    for cell in getattr(target, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        package = _package_of_value(value)
        if package is not None:
            packages.add(package)
    return packages


def pyclesperanto_package_for(func: Callable[..., Any]) -> str:
    """The pyclesperanto package whose arrays ``func`` must be given.

    The package declared with ``@pyclesperanto(package=...)``; else the only package the function
    refers to; else the package hcsgraph uses. Raises ``MissingLibraryError`` when it is not installed.
    """
    declared = getattr(func, "pyclesperanto_package", None)
    if declared is None:
        detect = getattr(func, "_hcsgraph_detect_package", None)
        found = detect() if detect is not None else referenced_pyclesperanto_packages(func)
        declared = next(iter(found)) if len(found) == 1 else None
    return resolve_pyclesperanto_package(declared)


def _failing_package(exc: BaseException) -> str | None:
    """The pyclesperanto package of the innermost traceback frame inside one of the two packages."""
    failed_in = None
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__") or ""
        failed_in = _CLE_CODE_ROOTS.get(module.partition(".")[0], failed_in)
        tb = tb.tb_next
    return failed_in


def _package_mixup(func: Callable[..., Any], stack: Any, exc: Exception) -> PyclesperantoPackageError | None:
    """A :class:`PyclesperantoPackageError` when ``exc`` was raised inside the package ``stack`` does not belong to."""
    got = pyclesperanto_package_of(stack)
    if got is None:
        return None
    from hcsgraph.gpu.oom import is_oom_error  # imports no array library

    if is_oom_error(exc) is not None:
        return None  # out of memory is recovered from, not a package mix-up
    failed_in = _failing_package(exc)
    if failed_in is None or failed_in == got:
        return None
    first_line = (str(exc).strip().splitlines() or [""])[0]
    if len(first_line) > 160:
        first_line = first_line[:160] + "..."
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return PyclesperantoPackageError(name, got, failed_in, f"{type(exc).__name__}: {first_line}")


def _declare(
    func: F, input_type: MemoryType, output_type: MemoryType, oom_recovery: bool, package: str | None = None
) -> F:
    if not callable(func):
        raise TypeError(f"memory type decorators apply to functions, got {type(func).__qualname__}")
    if package is not None:
        package = normalize_pyclesperanto_package(package)
        if MemoryType.PYCLESPERANTO not in (input_type, output_type):
            raise TypeError(f"package={package!r} applies to pyclesperanto functions only")
    cle_input = input_type is MemoryType.PYCLESPERANTO
    detected: list[set[str]] = []

    def detect() -> set[str]:
        if not detected:
            detected.append(referenced_pyclesperanto_packages(func))
        return detected[0]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for memory_type in (input_type, output_type):
            if not is_installed(memory_type):
                raise MissingLibraryError(memory_type, f"needed by {func.__qualname__}")
        if args and cle_input:
            args = (convert_to(args[0], input_type, package=pyclesperanto_package_for(wrapper)), *args[1:])
        elif args:
            args = (convert_to(args[0], input_type), *args[1:])
        try:
            result = func(*args, **kwargs)
        except Exception as exc:
            mixup = _package_mixup(func, args[0], exc) if args and cle_input else None
            if mixup is not None:
                raise mixup from exc
            raise
        if getattr(wrapper, "special_outputs", None) and isinstance(result, tuple):
            return (convert_to(result[0], output_type), *result[1:])
        return convert_to(result, output_type)

    wrapper.input_memory_type = input_type  # type: ignore[attr-defined]
    wrapper.output_memory_type = output_type  # type: ignore[attr-defined]
    wrapper.oom_recovery = bool(oom_recovery)  # type: ignore[attr-defined]
    wrapper.pyclesperanto_package = package  # type: ignore[attr-defined]
    wrapper._hcsgraph_detect_package = detect  # type: ignore[attr-defined]
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


@overload
def pyclesperanto(func: F) -> F: ...
@overload
def pyclesperanto(*, oom_recovery: bool = ..., package: str | None = ...) -> Callable[[F], F]: ...


def pyclesperanto(func: F | None = None, *, oom_recovery: bool = True, package: str | None = None) -> Any:
    """Declare a function that takes and returns pyclesperanto (OpenCL) arrays.

    Use bare (``@pyclesperanto``) or with options (``@pyclesperanto(oom_recovery=False)``).
    ``package``: the pyclesperanto package the function is written with, ``"pyclesperanto"``
    (>= 0.25) or ``"pyclesperanto_prototype"`` (alias ``"prototype"``); the function is then
    given that package's arrays. Default: the only package the function refers to, else the one
    hcsgraph uses (see the module documentation).
    """
    if func is None:
        return lambda f: _declare(f, MemoryType.PYCLESPERANTO, MemoryType.PYCLESPERANTO, oom_recovery, package)
    return _declare(func, MemoryType.PYCLESPERANTO, MemoryType.PYCLESPERANTO, oom_recovery, package)


numpy = _library_decorator(MemoryType.NUMPY, default_oom_recovery=False)
cupy = _library_decorator(MemoryType.CUPY, default_oom_recovery=True)
torch = _library_decorator(MemoryType.TORCH, default_oom_recovery=True)
tensorflow = _library_decorator(MemoryType.TENSORFLOW, default_oom_recovery=True)
jax = _library_decorator(MemoryType.JAX, default_oom_recovery=True)


def memory_types(
    input_type: MemoryType | str = MemoryType.NUMPY,
    output_type: MemoryType | str | None = None,
    oom_recovery: bool = False,
    package: str | None = None,
) -> Callable[[F], F]:
    """Declare a function that takes ``input_type`` and returns ``output_type`` (default: the same).

    ``package``: for pyclesperanto, as in :func:`pyclesperanto`.
    """
    source = as_memory_type(input_type)
    target = as_memory_type(output_type) if output_type is not None else source
    if package is not None:
        normalize_pyclesperanto_package(package)  # a bad name fails here, not at the first call
    return lambda func: _declare(func, source, target, oom_recovery, package)
