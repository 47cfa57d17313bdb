"""Out-of-memory recovery with each framework's own OOM exception, on a real LocalCluster.

There is no GPU here, so a step simulates a device that is too small: it raises the
framework's real out-of-memory exception on its first calls, or for stacks with more slices
than its "device" holds. Everything else is real: the arrays are torch / tensorflow / jax /
pyclesperanto (OpenCL) arrays, and the steps run in worker processes through client.submit.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from hcsgraph.config import MemoryType
from hcsgraph.gpu import (
    GPUOutOfMemoryError,
    Recovery,
    is_oom_error,
    run_with_oom_recovery,
    summarize_recoveries,
)
from hcsgraph.gpu.oom import requested_bytes

# Workers cannot import test modules: send this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

FRAMEWORKS = ["torch", "tensorflow", "jax", "opencl"] + (["cupy"] if importlib.util.find_spec("cupy") else [])
MEMORY_TYPE = {
    "torch": MemoryType.TORCH,
    "tensorflow": MemoryType.TENSORFLOW,
    "jax": MemoryType.JAX,
    "opencl": MemoryType.PYCLESPERANTO,
    "cupy": MemoryType.CUPY,
}
RESULT_TYPE = {
    "torch": "Tensor",
    "tensorflow": "EagerTensor",
    "jax": "ArrayImpl",
    "opencl": "_Array",
    "cupy": "ndarray",
}


def make_oom(framework: str, nbytes: int) -> Exception:
    """The framework's own out-of-memory exception, with the message the framework would write."""
    if framework == "torch":
        import torch

        size = f"{nbytes / 2**20:.2f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.2f} KiB"
        return torch.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate {size}. GPU 0 has a total capacity of 8.00 GiB"
        )
    if framework == "tensorflow":
        import tensorflow as tf

        return tf.errors.ResourceExhaustedError(
            None,
            None,
            f"OOM when allocating tensor with shape[{nbytes // 4}] and type float on /device:GPU:0",
        )
    if framework == "jax":
        import jax

        return jax.errors.JaxRuntimeError(
            f"RESOURCE_EXHAUSTED: Out of memory while trying to allocate {nbytes} bytes."
        )
    if framework == "opencl":
        import pyopencl as cl

        record = cl._cl._ErrorRecord(
            msg="clEnqueueNDRangeKernel failed: MEM_OBJECT_ALLOCATION_FAILURE",
            code=cl.status_code.MEM_OBJECT_ALLOCATION_FAILURE,
            routine="clEnqueueNDRangeKernel",
        )
        return cl.MemoryError(record)
    import cupy

    return cupy.cuda.memory.OutOfMemoryError(nbytes, 8 * 2**30)


def to_framework(framework: str, data: np.ndarray):
    if framework == "torch":
        import torch

        return torch.from_numpy(data)
    if framework == "tensorflow":
        import tensorflow as tf

        return tf.constant(data)
    if framework == "jax":
        import jax.numpy as jnp

        return jnp.asarray(data)
    if framework == "opencl":
        import pyclesperanto as cle

        return cle.push(data)
    import cupy

    return cupy.asarray(data)


def to_numpy(data) -> np.ndarray:
    if hasattr(data, "get"):  # cupy, pyclesperanto
        return np.asarray(data.get())
    return np.asarray(data)


def scale(stack, *, offset: float = 1.0):
    """The step's computation; exact in float32 for small integers, in every library."""
    return stack * 2.0 + offset


def count_calls(path: str) -> int:
    with open(path, "a") as f:
        f.write("x")
    return Path(path).stat().st_size


@dataclass
class SmallDevice:
    """``scale`` on a device that runs out of memory on the first ``fail_first`` calls and for
    stacks of more than ``max_slices`` slices; counts its calls in the file ``counter``."""

    framework: str
    counter: str
    fail_first: int = 0
    max_slices: int | None = None

    def __call__(self, stack, *, offset: float = 1.0):
        calls = count_calls(self.counter)
        if calls <= self.fail_first or (self.max_slices is not None and stack.shape[0] > self.max_slices):
            raise make_oom(self.framework, 4 * int(np.prod(stack.shape)))
        return scale(stack, offset=offset)


def run_on_worker(func, framework: str, data: np.ndarray, *, cpu: bool = False, splittable: bool = True):
    """A task: the stack in the framework's memory, then the step under OOM recovery."""
    stack = to_framework(framework, data)
    result, recoveries = run_with_oom_recovery(
        func,
        stack,
        {"offset": 1.0},
        step=f"{framework}_scale",
        well="B03",
        memory_type=MEMORY_TYPE[framework],
        cpu_func=scale if cpu else None,
        splittable=splittable,
    )
    return to_numpy(result), type(result).__name__, recoveries


@pytest.fixture(scope="module")
def oom_client():
    """One worker process of its own: every framework is imported once, and only there."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            yield client


@pytest.fixture()
def stack() -> np.ndarray:
    rng = np.random.default_rng(6)
    return rng.integers(0, 1000, size=(8, 16, 16)).astype(np.float32)


def actions(recoveries: list[Recovery]) -> list[str]:
    return [r.action for r in recoveries]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_retry_after_freeing_the_cache(oom_client, tmp_path, stack, framework):
    counter = str(tmp_path / "calls")
    step = SmallDevice(framework, counter, fail_first=1)
    out, type_name, recoveries = oom_client.submit(run_on_worker, step, framework, stack, pure=False).result()
    np.testing.assert_array_equal(out, stack * 2 + 1)
    assert out.dtype == np.float32
    assert type_name == RESULT_TYPE[framework]
    assert actions(recoveries) == ["retry"]
    assert summarize_recoveries(recoveries) == {framework: {"retry": 1}}
    assert recoveries[0].step == f"{framework}_scale" and recoveries[0].well == "B03"
    assert Path(counter).stat().st_size == 2


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_split_along_z_down_to_what_fits(oom_client, tmp_path, stack, framework):
    counter = str(tmp_path / "calls")
    step = SmallDevice(framework, counter, max_slices=2)
    out, type_name, recoveries = oom_client.submit(run_on_worker, step, framework, stack, pure=False).result()
    np.testing.assert_array_equal(out, stack * 2 + 1)
    assert out.shape == stack.shape and out.dtype == np.float32
    assert type_name == RESULT_TYPE[framework]  # concatenated in its own library
    assert actions(recoveries) == ["retry", "split"]
    assert recoveries[1].detail == "8 slices in 4 pieces"
    assert summarize_recoveries(recoveries) == {framework: {"retry": 1, "split": 1}}
    # 8 (OOM), 8 again (OOM), 4 (OOM) -> 2 + 2, 4 (OOM) -> 2 + 2
    assert Path(counter).stat().st_size == 8


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_cpu_fallback_when_nothing_fits(oom_client, tmp_path, stack, framework):
    step = SmallDevice(framework, str(tmp_path / "calls"), max_slices=0)
    out, _, recoveries = oom_client.submit(
        run_on_worker, step, framework, stack, cpu=True, pure=False
    ).result()
    np.testing.assert_array_equal(out, stack * 2 + 1)
    assert actions(recoveries) == ["retry", "split", "cpu_fallback"]
    assert recoveries[1].detail.startswith("failed: a single slice does not fit")
    assert summarize_recoveries(recoveries) == {framework: {"cpu_fallback": 1, "retry": 1, "split": 1}}


def test_unsplittable_step_goes_straight_to_the_cpu(oom_client, tmp_path, stack):
    counter = str(tmp_path / "calls")
    step = SmallDevice("torch", counter, max_slices=2)
    out, type_name, recoveries = oom_client.submit(
        run_on_worker, step, "torch", stack, cpu=True, splittable=False, pure=False
    ).result()
    np.testing.assert_array_equal(out, stack * 2 + 1)
    assert type_name == "Tensor"  # torch's CPU device
    assert actions(recoveries) == ["retry", "cpu_fallback"]
    assert Path(counter).stat().st_size == 2


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_failure_names_step_well_and_bytes(oom_client, tmp_path, stack, framework):
    step = SmallDevice(framework, str(tmp_path / "calls"), max_slices=0)
    future = oom_client.submit(run_on_worker, step, framework, stack, pure=False)
    with pytest.raises(GPUOutOfMemoryError) as info:
        future.result()
    err = info.value
    # the allocation the message reports (one slice) or, for OpenCL which reports none, the stack
    expected = stack.nbytes if framework == "opencl" else stack[0].nbytes
    assert (err.step, err.well, err.kind, err.requested_bytes) == (
        f"{framework}_scale",
        "B03",
        framework,
        expected,
    )
    message = str(err)
    assert f"'{framework}_scale'" in message and "'B03'" in message and f"{expected} bytes" in message


@dataclass
class MaxProjection:
    """A step whose output is not one slice per input slice: splitting must not be used."""

    counter: str

    def __call__(self, stack, *, offset: float = 1.0):
        import torch

        if count_calls(self.counter) <= 2 or stack.shape[0] > 4:
            raise make_oom("torch", 4 * int(np.prod(stack.shape)))
        return torch.amax(stack, dim=0, keepdim=True) + offset


def test_split_is_abandoned_when_results_do_not_stack(oom_client, tmp_path, stack):
    step = MaxProjection(str(tmp_path / "calls"))

    def task(data):
        import torch

        def cpu(s, *, offset):
            return torch.amax(s, dim=0, keepdim=True) + offset

        result, recoveries = run_with_oom_recovery(
            step, torch.from_numpy(data), {"offset": 1.0}, step="max_z", well="C01",
            memory_type="torch", cpu_func=cpu,
        )  # fmt: skip
        return result.numpy(), recoveries

    out, recoveries = oom_client.submit(task, stack, pure=False).result()
    np.testing.assert_array_equal(out, stack.max(axis=0, keepdims=True) + 1)
    assert actions(recoveries) == ["retry", "split", "cpu_fallback"]
    assert "not one result per slice" in recoveries[1].detail


def test_other_errors_propagate_without_recovery(oom_client, stack):
    def broken(s, *, offset):
        raise ValueError("threshold must be positive")

    future = oom_client.submit(run_on_worker, broken, "torch", stack, cpu=True, pure=False)
    with pytest.raises(ValueError, match="threshold must be positive"):
        future.result()


def recognised_kinds(framework: str) -> tuple[str | None, str | None]:
    """On a worker: what is_oom_error says of the framework's OOM, raw and as the cause of another error."""
    wrapped = RuntimeError("step failed")
    wrapped.__cause__ = make_oom(framework, 1024)
    return is_oom_error(make_oom(framework, 1024)), is_oom_error(wrapped)


def other_errors_kinds() -> list[str | None]:
    """On a worker: what is_oom_error says of errors that are not out-of-memory errors."""
    import jax
    import pyopencl as cl
    import tensorflow as tf
    import torch

    others = [
        ValueError("out of memory"),
        MemoryError("host allocation failed"),
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        tf.errors.InvalidArgumentError(None, None, "shapes differ"),
        jax.errors.JaxRuntimeError("INVALID_ARGUMENT: bad shape"),
        cl.LogicError(
            cl._cl._ErrorRecord(msg="INVALID_VALUE", code=cl.status_code.INVALID_VALUE, routine="x")
        ),
        torch.cuda.DeferredCudaCallError("CUDA call failed lazily"),
    ]
    return [is_oom_error(e) for e in others]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_is_oom_error_recognises_each_framework(oom_client, framework):
    assert oom_client.submit(recognised_kinds, framework, pure=False).result() == (framework, framework)


def test_is_oom_error_rejects_other_errors(oom_client):
    assert oom_client.submit(other_errors_kinds, pure=False).result() == [None] * 7


def test_detection_imports_no_framework():
    code = (
        "import sys\n"
        "from hcsgraph.gpu.oom import is_oom_error\n"
        "assert is_oom_error(RuntimeError('CUDA out of memory')) is None\n"
        "loaded = [m for m in ('torch', 'cupy', 'tensorflow', 'jax', 'pyopencl') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 7.79 GiB total capacity)", 20 * 2**20),
        ("Out of memory allocating 1,073,741,824 bytes (allocated so far: 0 bytes).", 2**30),
        ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123456 bytes.", 123456),
        (
            "OOM when allocating tensor with shape[8,512,512] and type float on /device:GPU:0",
            8 * 512 * 512 * 4,
        ),
        ("clEnqueueNDRangeKernel failed: MEM_OBJECT_ALLOCATION_FAILURE", None),
    ],
)
def test_requested_bytes_from_messages(message, expected):
    assert requested_bytes(RuntimeError(message)) == expected


def test_oom_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(GPUOutOfMemoryError("blur", "A01", 4096, "torch", "no CPU fallback")))
    assert (err.step, err.well, err.requested_bytes, err.kind) == ("blur", "A01", 4096, "torch")
    assert "4096 bytes" in str(err) and isinstance(err, MemoryError)
