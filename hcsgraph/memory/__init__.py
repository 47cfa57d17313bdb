"""Memory types: detect, convert, declare, stack and measure arrays of six libraries.

Importing this package is cheap: it imports none of torch, jax, tensorflow, cupy or
pyclesperanto. It registers ``dask.sizeof`` handlers for their arrays (lazily).
"""

from hcsgraph.config import MemoryType
from hcsgraph.memory import sizeof as _sizeof
from hcsgraph.memory.convert import (
    ConversionMethod,
    MemoryConversionError,
    conversion_table,
    conversion_table_markdown,
    convert_memory,
    convert_memory_with_method,
    convert_to,
    gpu_index_of,
    to_host,
    to_pyclesperanto_package,
)
from hcsgraph.memory.decorators import (
    PyclesperantoPackageError,
    cupy,
    jax,
    memory_types,
    numpy,
    pyclesperanto,
    pyclesperanto_package_for,
    tensorflow,
    torch,
)
from hcsgraph.memory.dtypes import check_dtype_supported, dtype_name, supported_dtypes
from hcsgraph.memory.libraries import MissingLibraryError, import_library, import_pyclesperanto, is_installed
from hcsgraph.memory.stack import stack_slices, unstack_slices
from hcsgraph.memory.types import as_memory_type, memory_type_of, pyclesperanto_package_of

_sizeof.register()

__all__ = [
    "ConversionMethod",
    "MemoryConversionError",
    "MemoryType",
    "MissingLibraryError",
    "PyclesperantoPackageError",
    "as_memory_type",
    "check_dtype_supported",
    "conversion_table",
    "conversion_table_markdown",
    "convert_memory",
    "convert_memory_with_method",
    "convert_to",
    "cupy",
    "dtype_name",
    "gpu_index_of",
    "import_library",
    "import_pyclesperanto",
    "is_installed",
    "jax",
    "memory_type_of",
    "memory_types",
    "numpy",
    "pyclesperanto",
    "pyclesperanto_package_for",
    "pyclesperanto_package_of",
    "stack_slices",
    "supported_dtypes",
    "tensorflow",
    "to_host",
    "to_pyclesperanto_package",
    "torch",
    "unstack_slices",
]
