"""Import the optional array libraries lazily, with install hints and a safe import order.

Nothing here imports torch, jax, tensorflow, cupy or pyclesperanto at module import time.
:func:`import_library` is the one place hcsgraph imports them.

pyclesperanto: hcsgraph uses ``pyclesperanto`` (>= 0.25) when it is installed and falls back to
``pyclesperanto_prototype`` (0.24.4); set ``HCSGRAPH_PYCLESPERANTO=pyclesperanto_prototype`` to
prefer the prototype. Both packages' arrays are recognised as ``MemoryType.PYCLESPERANTO``, but
they do not mix: a ``pyclesperanto_prototype`` function cannot read a ``pyclesperanto`` array.
:func:`import_pyclesperanto` imports either package by name (``"pyclesperanto"``,
``"pyclesperanto_prototype"`` or ``"prototype"``); ``@pyclesperanto(package=...)`` in
:mod:`hcsgraph.memory.decorators` says which one a function needs.

Import order: with the PoCL OpenCL runtime (OpenCL on the CPU), starting OpenCL after TensorFlow
has been imported crashes the process (TensorFlow's bundled LLVM clashes with PoCL's).
:func:`import_library` therefore starts OpenCL (builds a first kernel) before it imports
TensorFlow, and refuses with a clear ``RuntimeError`` to start OpenCL on PoCL after something
else imported TensorFlow first. A known remaining limit on PoCL: once both jax and TensorFlow are
loaded, building a *new* OpenCL kernel can fail with "unknown target CPU" (a clean
``RuntimeError`` from pyclesperanto, not a crash); run pyclesperanto steps in worker processes
that do not also run jax and TensorFlow steps. Conversions (push/pull) are unaffected.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from hcsgraph.config import MemoryType

PYCLESPERANTO_ENV = "HCSGRAPH_PYCLESPERANTO"
_CLE_MODULES = ("pyclesperanto", "pyclesperanto_prototype")
CLE_PACKAGES = _CLE_MODULES
"""The two pyclesperanto packages hcsgraph knows, by import name."""
_CLE_ALIASES = {
    "pyclesperanto": "pyclesperanto",
    "cle": "pyclesperanto",
    "pyclesperanto_prototype": "pyclesperanto_prototype",
    "prototype": "pyclesperanto_prototype",
}


@dataclass(frozen=True)
class LibraryInfo:
    """Import name and install hint of the library behind a memory type."""

    import_name: str
    extra: str

    @property
    def install_hint(self) -> str:
        return f"pip install hcsgraph[{self.extra}]"


LIBRARIES: dict[MemoryType, LibraryInfo] = {
    MemoryType.NUMPY: LibraryInfo("numpy", "all"),
    MemoryType.CUPY: LibraryInfo("cupy", "gpu"),
    MemoryType.TORCH: LibraryInfo("torch", "torch"),
    MemoryType.TENSORFLOW: LibraryInfo("tensorflow", "tf"),
    MemoryType.JAX: LibraryInfo("jax", "jax"),
    MemoryType.PYCLESPERANTO: LibraryInfo("pyclesperanto", "cle"),
}


class MissingLibraryError(ImportError):
    """The array library a memory type needs is not installed."""

    def __init__(
        self,
        memory_type: MemoryType,
        detail: str = "",
        *,
        library: str | None = None,
        install_hint: str | None = None,
    ) -> None:
        memory_type = MemoryType(memory_type)
        info = LIBRARIES[memory_type]
        self.memory_type = memory_type
        self.detail = detail
        self.library = library or info.import_name
        self.install_hint = install_hint or info.install_hint
        message = (
            f"memory type {memory_type.value!r} needs the library {self.library!r}, which is not "
            f"installed; install it with `{self.install_hint}`"
        )
        super().__init__(message + (f" ({detail})" if detail else ""), name=self.library)

    def __reduce__(self):  # rebuilt from its fields, so that it travels from dask workers
        return (
            _missing_library_error,
            (self.memory_type.value, self.detail, self.library, self.install_hint),
        )


def _missing_library_error(memory_type: str, detail: str, library: str, install_hint: str) -> MissingLibraryError:
    return MissingLibraryError(MemoryType(memory_type), detail, library=library, install_hint=install_hint)


def _installed(module_name: str) -> bool:
    if module_name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        return False


def pyclesperanto_module_name() -> str | None:
    """The pyclesperanto package hcsgraph uses, or None when neither is installed."""
    preferred = os.environ.get(PYCLESPERANTO_ENV, "").strip()
    if preferred and preferred not in _CLE_MODULES:
        raise ValueError(f"{PYCLESPERANTO_ENV}={preferred!r}; expected one of {', '.join(_CLE_MODULES)}")
    candidates = (preferred,) if preferred else _CLE_MODULES
    return next((name for name in candidates if _installed(name)), None)


def normalize_pyclesperanto_package(package: str) -> str:
    """The import name of a pyclesperanto package: ``"pyclesperanto"`` or ``"pyclesperanto_prototype"``.

    Accepts those names and the aliases ``"cle"`` and ``"prototype"``; anything else is a ValueError.
    """
    if isinstance(package, str):
        name = _CLE_ALIASES.get(package.strip().lower())
        if name is not None:
            return name
    raise ValueError(
        f"package={package!r} is not a pyclesperanto package; use 'pyclesperanto' (>= 0.25) or "
        "'pyclesperanto_prototype' (alias 'prototype')"
    )


def resolve_pyclesperanto_package(package: str | None = None) -> str:
    """``package`` normalised, or (None) the package hcsgraph uses; MissingLibraryError when not installed."""
    name = normalize_pyclesperanto_package(package) if package is not None else pyclesperanto_module_name()
    if name is None:
        raise MissingLibraryError(MemoryType.PYCLESPERANTO)
    if not _installed(name):
        raise MissingLibraryError(
            MemoryType.PYCLESPERANTO,
            "asked for by package=" + repr(package),
            library=name,
            install_hint=f"pip install {name}",
        )
    return name


def is_installed(memory_type: MemoryType) -> bool:
    """True when the library behind ``memory_type`` can be imported (without importing it)."""
    if memory_type is MemoryType.PYCLESPERANTO:
        return pyclesperanto_module_name() is not None
    return _installed(LIBRARIES[memory_type].import_name)


_lock = threading.RLock()
_opencl_ready = False


def _pocl_registered() -> bool:
    """True when the PoCL OpenCL runtime is registered with the ICD loader."""
    vendors = Path(os.environ.get("OCL_ICD_VENDORS", "/etc/OpenCL/vendors"))
    icds = [vendors] if vendors.is_file() else sorted(vendors.glob("*.icd")) if vendors.is_dir() else []
    for icd in icds:
        try:
            if "pocl" in icd.name.lower() or "pocl" in icd.read_text().lower():
                return True
        except OSError:
            continue
    return False


def _start_opencl(cle: ModuleType) -> None:
    """Build and run a first OpenCL kernel, so that later imports cannot break the compiler."""
    global _opencl_ready
    import numpy as np

    probe = cle.push(np.zeros((2, 2), dtype=np.float32))
    result = cle.add_image_and_scalar(probe, scalar=1.0)
    if hasattr(cle, "pull"):
        cle.pull(result)
    else:  # pragma: no cover - both packages provide pull
        result.get()
    _opencl_ready = True


def _import_pyclesperanto(package: str | None = None) -> ModuleType:
    name = resolve_pyclesperanto_package(package)
    with _lock:
        if not _opencl_ready and "tensorflow" in sys.modules and _pocl_registered():
            raise RuntimeError(
                "pyclesperanto cannot start OpenCL (PoCL) after TensorFlow was imported: the two "
                "runtimes' LLVM copies clash and the process would crash. Use pyclesperanto first, or "
                "let hcsgraph import TensorFlow (hcsgraph.memory.libraries.import_library) so that it "
                "starts OpenCL first."
            )
        cle = importlib.import_module(name)
        if not _opencl_ready:
            _start_opencl(cle)
        return cle


def _import_llvm_library(name: str) -> ModuleType:
    """Import tensorflow (it bundles LLVM) after starting OpenCL where PoCL is in use."""
    with _lock:
        if name not in sys.modules and not _opencl_ready:
            if pyclesperanto_module_name() is not None and _pocl_registered():
                try:
                    _import_pyclesperanto()
                except Exception:  # noqa: BLE001 - no OpenCL device: nothing to protect
                    pass
        return importlib.import_module(name)


def import_library(memory_type: MemoryType) -> ModuleType:
    """Import and return the module behind ``memory_type`` (``pyclesperanto`` or its prototype).

    Raises :class:`MissingLibraryError` (an ``ImportError``) naming the extra to install.
    """
    memory_type = MemoryType(memory_type)
    if memory_type is MemoryType.PYCLESPERANTO:
        return import_pyclesperanto()
    if not is_installed(memory_type):
        raise MissingLibraryError(memory_type)
    try:
        if memory_type is MemoryType.TENSORFLOW:
            return _import_llvm_library("tensorflow")
        return importlib.import_module(LIBRARIES[memory_type].import_name)
    except ImportError as exc:
        if isinstance(exc, MissingLibraryError):
            raise
        raise MissingLibraryError(memory_type, f"import failed: {exc}") from exc


def import_pyclesperanto(package: str | None = None) -> ModuleType:
    """Import a pyclesperanto package by name (default: the one hcsgraph uses), starting OpenCL safely.

    ``package``: ``"pyclesperanto"``, ``"pyclesperanto_prototype"`` (alias ``"prototype"``) or None.
    Raises :class:`MissingLibraryError` naming the package when it is not installed.
    """
    try:
        return _import_pyclesperanto(package)
    except ImportError as exc:
        if isinstance(exc, MissingLibraryError):
            raise
        raise MissingLibraryError(MemoryType.PYCLESPERANTO, f"import failed: {exc}") from exc


def opencl_started() -> bool:
    """True once hcsgraph has built a first OpenCL kernel in this process."""
    return _opencl_ready
