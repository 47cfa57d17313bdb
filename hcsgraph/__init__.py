"""hcsgraph: high-content-screening microscopy pipelines as lazy Dask task graphs.

    import hcsgraph
    plate = hcsgraph.open_plate("/data/plate1")
    pipeline = hcsgraph.Pipeline([hcsgraph.FunctionStep("gaussian_filter", sigma=2)], name="smooth")
    result = pipeline.compile(plate, "/results/plate1").compute()
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from hcsgraph.config import (
    Backend,
    ConfigError,
    GlobalPipelineConfig,
    GPUConfig,
    MaterializationBackend,
    MemoryType,
    OnError,
    StepMaterializationConfig,
    VFSConfig,
    ZarrChunkStrategy,
    ZarrCompressor,
    ZarrConfig,
)

__version__ = "0.1.0"

# Heavier entry points load on first use so that `import hcsgraph` stays cheap on workers.
_LAZY = {
    "open_plate": "hcsgraph.plate",
    "PlateIndex": "hcsgraph.plate",
    "FileManager": "hcsgraph.io",
    "storage_registry": "hcsgraph.io",
    "FunctionStep": "hcsgraph.pipeline",
    "Pipeline": "hcsgraph.pipeline",
    "PipelineGraph": "hcsgraph.pipeline",
    "RunResult": "hcsgraph.pipeline",
    "special_outputs": "hcsgraph.pipeline",
    "special_inputs": "hcsgraph.pipeline",
    "GPUWorkerPlugin": "hcsgraph.gpu",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hcsgraph' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "Backend",
    "ConfigError",
    "GPUConfig",
    "GlobalPipelineConfig",
    "MaterializationBackend",
    "MemoryType",
    "OnError",
    "StepMaterializationConfig",
    "VFSConfig",
    "ZarrChunkStrategy",
    "ZarrCompressor",
    "ZarrConfig",
    "__version__",
    *_LAZY,
]
