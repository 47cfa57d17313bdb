"""Z projections: ``max_projection`` and ``mean_projection`` turn ``[Z, Y, X]`` into ``[1, Y, X]``.

``max_projection`` keeps the dtype. ``mean_projection`` returns float32 for integer and bool
input (a mean is not an integer; nothing is rounded or rescaled) and keeps float dtypes
(pyclesperanto always computes in float32). Projections need the whole stack, so they are
marked ``oom_splittable = False``: out-of-memory recovery may not split them along Z.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hcsgraph.functions import _cle_ops, _torch_ops
from hcsgraph.functions._common import check_stack, not_splittable
from hcsgraph.memory.decorators import numpy as numpy_func
from hcsgraph.memory.decorators import pyclesperanto as cle_func
from hcsgraph.memory.decorators import torch as torch_func


def _check_not_empty(stack: Any, name: str) -> None:
    check_stack(stack, name)
    if stack.shape[0] == 0:
        raise ValueError(f"{name}: the stack has no Z planes to project")


@not_splittable
@numpy_func
def max_projection(stack: np.ndarray) -> np.ndarray:
    """Maximum over Z, shape [1, Y, X]; keeps the dtype."""
    _check_not_empty(stack, "max_projection")
    return np.max(np.asarray(stack), axis=0, keepdims=True)


@not_splittable
@numpy_func
def mean_projection(stack: np.ndarray) -> np.ndarray:
    """Mean over Z, shape [1, Y, X]; float32 for integer input."""
    _check_not_empty(stack, "mean_projection")
    stack = np.asarray(stack)
    dtype = stack.dtype if np.issubdtype(stack.dtype, np.floating) else np.float32
    return np.mean(stack, axis=0, keepdims=True, dtype=np.float64).astype(dtype)


@not_splittable
@torch_func(oom_recovery=True)
def max_projection_torch(stack: Any) -> Any:
    """Maximum over Z, shape [1, Y, X]; keeps the dtype."""
    torch = _torch_ops.torch_module()
    _check_not_empty(stack, "max_projection")
    if stack.dtype in (torch.uint16, torch.uint32, torch.bool):
        return stack.to(torch.int64).amax(dim=0, keepdim=True).to(stack.dtype)
    return stack.amax(dim=0, keepdim=True)


@not_splittable
@torch_func(oom_recovery=True)
def mean_projection_torch(stack: Any) -> Any:
    """Mean over Z, shape [1, Y, X]; float32 for integer input."""
    torch = _torch_ops.torch_module()
    _check_not_empty(stack, "mean_projection")
    dtype = stack.dtype if stack.dtype.is_floating_point else torch.float32
    return stack.to(torch.float64).mean(dim=0, keepdim=True).to(dtype)


@not_splittable
@cle_func
def max_projection_cle(stack: Any) -> Any:
    """Maximum over Z, shape [1, Y, X]; keeps the dtype (pyclesperanto)."""
    _check_not_empty(stack, "max_projection")
    return _cle_ops.cle_module().maximum_z_projection(stack, keep_dims=True)


@not_splittable
@cle_func
def mean_projection_cle(stack: Any) -> Any:
    """Mean over Z, shape [1, Y, X], float32 (pyclesperanto)."""
    _check_not_empty(stack, "mean_projection")
    return _cle_ops.cle_module().mean_z_projection(stack, keep_dims=True)
