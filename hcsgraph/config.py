"""Enums and frozen configuration objects.

Every config validates itself when it is built: a bad value raises :class:`ConfigError`
naming the field, the value and what is accepted. Enum fields also accept their string
value (``VFSConfig(materialization_backend="disk")``).

Values resolve step → pipeline → global: see :func:`resolve`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, TypeVar


class ConfigError(ValueError):
    """A configuration value is invalid."""


class Backend(StrEnum):
    """Where the VFS keeps data."""

    MEMORY = "memory"
    DISK = "disk"
    ZARR = "zarr"


class MaterializationBackend(StrEnum):
    """Where final outputs are written."""

    DISK = "disk"
    ZARR = "zarr"


class ZarrCompressor(StrEnum):
    """Compressor for Zarr chunks."""

    NONE = "none"
    LZ4 = "lz4"
    ZSTD = "zstd"


class ZarrChunkStrategy(StrEnum):
    """How Zarr arrays are chunked.

    ADAPTIVE: one chunk per YX plane up to ``ZarrConfig.max_chunk_bytes``, YX tiles above it,
    with one shard per plane when tiling makes many chunks. WELL and FIELD: one chunk holds a
    whole stack (all planes of a field).
    """

    ADAPTIVE = "adaptive"
    WELL = "well"
    FIELD = "field"


class MemoryType(StrEnum):
    """Array libraries a step can compute in."""

    NUMPY = "numpy"
    CUPY = "cupy"
    TORCH = "torch"
    TENSORFLOW = "tensorflow"
    JAX = "jax"
    PYCLESPERANTO = "pyclesperanto"

    @property
    def is_gpu_only(self) -> bool:
        """True for libraries that cannot compute without a GPU (cupy)."""
        return self is MemoryType.CUPY


class OnError(StrEnum):
    """What a run does when a group fails."""

    STOP = "stop"
    CONTINUE = "continue"


E = TypeVar("E", bound=Enum)

# Valid compression levels for each compressor (inclusive).
COMPRESSION_LEVELS: dict[ZarrCompressor, tuple[int, int]] = {
    ZarrCompressor.NONE: (0, 0),
    ZarrCompressor.LZ4: (0, 9),  # Blosc clevel
    ZarrCompressor.ZSTD: (1, 22),
}
OME_ZARR_VERSIONS = ("0.4", "0.5")


def coerce_enum(enum_cls: type[E], value: Any, field_name: str) -> E:
    """Return ``value`` as a member of ``enum_cls``; accept the member or its string value."""
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        try:
            return enum_cls(value.lower())
        except ValueError:
            pass
    valid = ", ".join(repr(m.value) for m in enum_cls)
    raise ConfigError(f"{field_name}={value!r} is not a valid {enum_cls.__name__}; expected one of {valid}")


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class VFSConfig:
    """Where intermediates and final outputs live.

    ``memory_limit_gb``: when the planned intermediate bytes of a run exceed it, intermediates
    go through a scratch Zarr store instead of worker memory. ``None`` means no limit.
    ``scratch_dir``: where that scratch store lives (a path every worker can reach, e.g. a node's
    local disk on a single machine, or a URL); by default ``.hcsgraph/scratch`` inside the output.
    """

    intermediate_backend: Backend = Backend.MEMORY
    materialization_backend: MaterializationBackend = MaterializationBackend.ZARR
    memory_limit_gb: float | None = None
    scratch_dir: str | None = None

    def __post_init__(self) -> None:
        _set(self, "intermediate_backend", coerce_enum(Backend, self.intermediate_backend, "intermediate_backend"))
        _set(
            self,
            "materialization_backend",
            coerce_enum(MaterializationBackend, self.materialization_backend, "materialization_backend"),
        )
        if self.memory_limit_gb is not None:
            if isinstance(self.memory_limit_gb, bool) or not isinstance(self.memory_limit_gb, int | float):
                raise ConfigError(f"memory_limit_gb={self.memory_limit_gb!r} must be a number of GiB or None")
            if not self.memory_limit_gb > 0:
                raise ConfigError(f"memory_limit_gb={self.memory_limit_gb!r} must be > 0 (or None for no limit)")

    @property
    def memory_limit_bytes(self) -> int | None:
        """The limit in bytes, or None."""
        return None if self.memory_limit_gb is None else int(self.memory_limit_gb * 2**30)


@dataclass(frozen=True)
class ZarrConfig:
    """How Zarr arrays are compressed and chunked."""

    compressor: ZarrCompressor = ZarrCompressor.LZ4
    compression_level: int = 1
    chunk_strategy: ZarrChunkStrategy = ZarrChunkStrategy.ADAPTIVE
    ome_zarr_version: str = "0.5"
    max_chunk_bytes: int = 16 * 2**20
    """ADAPTIVE: largest YX plane kept as one chunk; larger planes are tiled."""
    shard_min_chunks: int = 16
    """ADAPTIVE: a plane tiled into at least this many chunks is written as one shard."""
    pyramid_levels: int = 1
    """Resolution levels written for each OME-Zarr image (1 = full resolution only)."""

    def __post_init__(self) -> None:
        _set(self, "compressor", coerce_enum(ZarrCompressor, self.compressor, "compressor"))
        _set(self, "chunk_strategy", coerce_enum(ZarrChunkStrategy, self.chunk_strategy, "chunk_strategy"))
        level = self.compression_level
        if isinstance(level, bool) or not isinstance(level, int):
            raise ConfigError(f"compression_level={level!r} must be an integer")
        low, high = COMPRESSION_LEVELS[self.compressor]
        if self.compressor is not ZarrCompressor.NONE and not low <= level <= high:
            raise ConfigError(
                f"compression_level={level} is out of range for {self.compressor.value}: expected {low}..{high}"
            )
        version = str(self.ome_zarr_version)
        if version not in OME_ZARR_VERSIONS:
            raise ConfigError(f"ome_zarr_version={self.ome_zarr_version!r}: expected one of {OME_ZARR_VERSIONS}")
        _set(self, "ome_zarr_version", version)
        if self.max_chunk_bytes <= 0:
            raise ConfigError(f"max_chunk_bytes={self.max_chunk_bytes!r} must be > 0")
        if isinstance(self.pyramid_levels, bool) or not isinstance(self.pyramid_levels, int) or self.pyramid_levels < 1:
            raise ConfigError(f"pyramid_levels={self.pyramid_levels!r} must be an integer >= 1")
        if self.shard_min_chunks < 1:
            raise ConfigError(f"shard_min_chunks={self.shard_min_chunks!r} must be >= 1")

    @property
    def zarr_format(self) -> int:
        """Zarr format matching the OME-Zarr version: 3 for 0.5, 2 for 0.4."""
        return 3 if self.ome_zarr_version == "0.5" else 2


@dataclass(frozen=True)
class GPUConfig:
    """GPU use and out-of-memory recovery."""

    oom_recovery: bool = True
    """Free caches, split along Z, then fall back to the CPU when a GPU step runs out of memory."""
    cpu_fallback: bool = True
    """Default of ``FunctionStep(allow_cpu_fallback=)``: a GPU step may run its CPU version when
    recovery on the device fails, or (cupy) when no GPU is there at compile time."""
    gpu_resource: float = 1.0
    """Amount of the ``GPU`` worker resource each GPU-typed task asks for."""

    def __post_init__(self) -> None:
        if not self.gpu_resource > 0:
            raise ConfigError(f"gpu_resource={self.gpu_resource!r} must be > 0")


@dataclass(frozen=True)
class StepMaterializationConfig:
    """A step's own output: written with ``backend`` under ``sub_dir`` of the run output."""

    sub_dir: str
    backend: MaterializationBackend | None = None

    def __post_init__(self) -> None:
        if not self.sub_dir or os.path.isabs(self.sub_dir) or ".." in self.sub_dir.replace("\\", "/").split("/"):
            raise ConfigError(f"sub_dir={self.sub_dir!r} must be a relative directory name inside the output")
        if self.backend is not None:
            _set(self, "backend", coerce_enum(MaterializationBackend, self.backend, "backend"))


@dataclass(frozen=True)
class GlobalPipelineConfig:
    """Settings for a whole run (the cluster it runs on is the caller's: see ``hcsgraph.gpu.local_cluster``)."""

    vfs: VFSConfig = field(default_factory=VFSConfig)
    zarr: ZarrConfig = field(default_factory=ZarrConfig)
    gpu: GPUConfig = field(default_factory=GPUConfig)
    on_error: OnError = OnError.STOP
    overwrite: bool = False
    fuse_tasks: bool = True
    """Run each linear run of a group's tasks (load, steps, conversions, write) as one task."""

    def __post_init__(self) -> None:
        if not isinstance(self.fuse_tasks, bool):
            raise ConfigError(f"fuse_tasks={self.fuse_tasks!r} must be True or False")
        for name, cls in (("vfs", VFSConfig), ("zarr", ZarrConfig), ("gpu", GPUConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be a {cls.__name__}")
        _set(self, "on_error", coerce_enum(OnError, self.on_error, "on_error"))

    def replace(self, **changes: Any) -> GlobalPipelineConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


def resolve(*values: Any, default: Any = None) -> Any:
    """The first value that is not None, in order step → pipeline → global; else ``default``."""
    for value in values:
        if value is not None:
            return value
    return default
