"""The two pyclesperanto packages: ``pyclesperanto`` (>= 0.25) and ``pyclesperanto_prototype``.

hcsgraph converts to one of them (``pyclesperanto`` unless ``HCSGRAPH_PYCLESPERANTO`` says
otherwise); ``@pyclesperanto`` functions written with the other one get that package's arrays
(declared with ``package=`` or detected from what the function refers to), or a clear
:class:`PyclesperantoPackageError`. Real OpenCL (PoCL) kernels run in fresh processes: on PoCL,
new kernels cannot be built once jax and TensorFlow are both loaded, as they are in this one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from hcsgraph.config import MemoryType
from hcsgraph.memory import (
    MemoryConversionError,
    MissingLibraryError,
    PyclesperantoPackageError,
    convert_to,
    memory_type_of,
    pyclesperanto_package_for,
    pyclesperanto_package_of,
    to_host,
    to_pyclesperanto_package,
)
from hcsgraph.memory import decorators as d
from hcsgraph.memory.libraries import (
    PYCLESPERANTO_ENV,
    normalize_pyclesperanto_package,
    pyclesperanto_module_name,
)

PROTO = "pyclesperanto_prototype"
CLE = "pyclesperanto"
needs_both = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in (CLE, PROTO)), reason="needs both pyclesperanto packages"
)


@pytest.fixture()
def both(require):
    """Both packages, importable and with OpenCL started (else skip with the reason)."""
    require(MemoryType.PYCLESPERANTO)
    cle = pytest.importorskip("pyclesperanto")
    proto = pytest.importorskip("pyclesperanto_prototype")
    return cle, proto


# ------------------------------------------------------------------------------ names, detection


@pytest.mark.parametrize(
    ("name", "expected"),
    [("pyclesperanto", CLE), ("cle", CLE), ("prototype", PROTO), ("pyclesperanto_prototype", PROTO),
     (" Prototype ", PROTO)],
)
def test_package_names_and_aliases(name, expected):
    assert normalize_pyclesperanto_package(name) == expected


@pytest.mark.parametrize("bad", ["opencl", "", None, 3])
def test_a_bad_package_name_fails_when_decorating(bad):
    with pytest.raises(ValueError, match="not a pyclesperanto package"):
        normalize_pyclesperanto_package(bad)
    if isinstance(bad, str):
        with pytest.raises(ValueError, match="not a pyclesperanto package"):
            d.pyclesperanto(package=bad)(lambda stack: stack)
        with pytest.raises(ValueError, match="not a pyclesperanto package"):
            d.memory_types("pyclesperanto", package=bad)


def test_package_applies_to_pyclesperanto_functions_only():
    with pytest.raises(TypeError, match="pyclesperanto functions only"):
        d.memory_types("torch", package="prototype")(lambda stack: stack)
    with pytest.raises(TypeError):
        d.torch(package="prototype")  # the other decorators take no package


def test_declared_package_is_carried_and_wins(both):
    @d.pyclesperanto(package="prototype")
    def declared(stack):
        return stack

    @d.pyclesperanto
    def plain(stack):
        return stack

    assert declared.pyclesperanto_package == PROTO and plain.pyclesperanto_package is None
    assert declared.input_memory_type is MemoryType.PYCLESPERANTO and declared.oom_recovery is True
    assert pyclesperanto_package_for(declared) == PROTO
    assert pyclesperanto_package_for(plain) == pyclesperanto_module_name()
    mixed = d.memory_types("pyclesperanto", "numpy", package="pyclesperanto_prototype")(lambda stack: stack)
    assert mixed.pyclesperanto_package == PROTO and mixed.output_memory_type is MemoryType.NUMPY


def test_detection_reads_globals_closures_and_imports(both):
    cle, proto = both
    namespace = {"cle": cle, "proto": proto, "blur": proto.gaussian_blur, "np": np}
    sources = {
        "def f(s):\n    return proto.gaussian_blur(s)\n": {PROTO},
        "def f(s):\n    return blur(s)\n": {PROTO},
        "def f(s):\n    return cle.gaussian_blur(s)\n": {CLE},
        "def f(s):\n    import pyclesperanto_prototype as p\n    return p.maximum_box(s)\n": {PROTO},
        "def f(s):\n    from pyclesperanto import gaussian_blur\n    return gaussian_blur(s)\n": {CLE},
        "def f(s):\n    return [proto.pull(x) for x in s]\n": {PROTO},  # nested code objects
        "def f(s):\n    return cle.push(proto.pull(s))\n": {CLE, PROTO},
        "def f(s):\n    return np.asarray(s)\n": set(),
    }
    for source, expected in sources.items():
        scope = dict(namespace)
        exec(source, scope)  # noqa: S102 - test functions defined from source
        assert d.referenced_pyclesperanto_packages(scope["f"]) == expected, source

    def make(module):
        def closure(s):
            return module.gaussian_blur(s)

        return closure

    assert d.referenced_pyclesperanto_packages(make(proto)) == {PROTO}
    assert d.referenced_pyclesperanto_packages(np.asarray) == set()  # no Python code: nothing found
    # a package's own functions, decorated directly
    assert d.referenced_pyclesperanto_packages(proto.gaussian_blur) == {PROTO}
    assert d.referenced_pyclesperanto_packages(cle.gaussian_blur) == {CLE}
    assert pyclesperanto_package_for(d.pyclesperanto(proto.gaussian_blur)) == PROTO
    # one package referenced: its arrays; both or none: the package hcsgraph uses
    scope = dict(namespace)
    exec("def f(s):\n    return cle.push(proto.pull(s))\n", scope)  # noqa: S102
    assert pyclesperanto_package_for(d.pyclesperanto(scope["f"])) == pyclesperanto_module_name()
    assert pyclesperanto_package_for(d.pyclesperanto(make(proto))) == PROTO


# ------------------------------------------------------------------------------ conversions


def test_arrays_of_each_package_are_told_apart(both):
    cle, proto = both
    x = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    new = cle.push(x)
    old = proto.push(x.astype(np.float32))
    assert memory_type_of(new) is memory_type_of(old) is MemoryType.PYCLESPERANTO
    assert pyclesperanto_package_of(new) == CLE and pyclesperanto_package_of(old) == PROTO
    assert pyclesperanto_package_of(x) is None


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "float32"])
@pytest.mark.parametrize(("source", "target"), [(CLE, PROTO), (PROTO, CLE)])
def test_between_packages_exactly(both, sample, dtype, source, target):
    x = sample(dtype)
    start = to_pyclesperanto_package(x, source)
    assert pyclesperanto_package_of(start) == source
    moved = to_pyclesperanto_package(start, target)
    assert pyclesperanto_package_of(moved) == target and memory_type_of(moved) is MemoryType.PYCLESPERANTO
    back = to_host(moved)
    assert back.dtype == x.dtype and back.shape == x.shape
    np.testing.assert_array_equal(back, x)
    assert to_pyclesperanto_package(moved, target) is moved  # already that package: untouched
    again = convert_to(moved, "pyclesperanto", package=source)
    assert pyclesperanto_package_of(again) == source
    np.testing.assert_array_equal(to_host(again), x)
    assert convert_to(moved, "pyclesperanto") is moved  # without package=: either package is fine


def test_from_other_libraries_to_a_named_package(both, require, sample):
    torch = require(MemoryType.TORCH)
    x = sample("float32")
    for data in (x, torch.from_numpy(x.copy())):
        out = convert_to(data, MemoryType.PYCLESPERANTO, package="prototype")
        assert pyclesperanto_package_of(out) == PROTO
        np.testing.assert_array_equal(to_host(out), x)


def test_a_dtype_the_package_cannot_hold_is_an_error(both):
    _cle, proto = both
    from pyclesperanto_prototype._tier0._pycl import OCLArray

    wide = OCLArray.from_array(np.arange(6, dtype=np.int64).reshape(1, 2, 3))
    with pytest.raises(MemoryConversionError, match=r"int64.*arrays of pyclesperanto\b") as info:
        to_pyclesperanto_package(wide, "pyclesperanto")
    assert info.value.source_type == "pyclesperanto (pyclesperanto_prototype)"
    assert info.value.method == "dtype check"
    with pytest.raises(MemoryConversionError, match="bool"):
        to_pyclesperanto_package(np.ones((2, 2), bool), "prototype")


def test_errors_travel_from_workers():
    err = pickle.loads(pickle.dumps(PyclesperantoPackageError("blur", CLE, PROTO, "TypeError: nope")))
    assert (err.function, err.got, err.failed_in, err.detail) == ("blur", CLE, PROTO, "TypeError: nope")
    assert isinstance(err, TypeError) and "package='pyclesperanto_prototype'" in str(err)
    missing = pickle.loads(pickle.dumps(MissingLibraryError(MemoryType.CUPY, "needed by f")))
    assert missing.memory_type is MemoryType.CUPY and missing.library == "cupy"
    assert "pip install hcsgraph[gpu]" in str(missing) and "needed by f" in str(missing)
    custom = pickle.loads(pickle.dumps(MissingLibraryError(
        MemoryType.PYCLESPERANTO, "x", library=PROTO, install_hint=f"pip install {PROTO}")))
    assert custom.library == PROTO and f"pip install {PROTO}" in str(custom)


# ------------------------------------------------------------------------------ real kernels

# Run in a fresh process. The step is called the way a pipeline step is (hcsgraph.pipeline.tasks):
# convert_to(stack, func.input_memory_type, device), then func(stack); the OOM-recovery path
# calls it through run_with_oom_recovery.
_KERNELS = r'''
import json, os, sys
import numpy as np
from scipy import ndimage
from hcsgraph.gpu.oom import run_with_oom_recovery
from hcsgraph.memory import (PyclesperantoPackageError, convert_to, pyclesperanto_package_of,
                             to_host)
from hcsgraph.memory.decorators import pyclesperanto
from hcsgraph.memory.libraries import import_library, pyclesperanto_module_name
import_library("pyclesperanto")  # starts OpenCL the way hcsgraph does
import pyclesperanto as cle
import pyclesperanto_prototype as proto


@pyclesperanto
def blur_prototype_detected(stack):
    return proto.gaussian_blur(stack, sigma_x=1.5, sigma_y=1.5, sigma_z=0)


@pyclesperanto(package="prototype")
def blur_prototype_declared(stack):
    import pyclesperanto_prototype
    return pyclesperanto_prototype.gaussian_blur(stack, sigma_x=1.5, sigma_y=1.5, sigma_z=0)


@pyclesperanto
def blur_new_detected(stack):
    return cle.gaussian_blur(stack, sigma_x=1.5, sigma_y=1.5, sigma_z=0)


@pyclesperanto(package="pyclesperanto")
def blur_new_declared(stack):
    return cle.gaussian_blur(stack, sigma_x=1.5, sigma_y=1.5, sigma_z=0)


@pyclesperanto(package="pyclesperanto")
def blur_prototype_declared_wrongly(stack):
    return proto.gaussian_blur(stack, sigma_x=1.5, sigma_y=1.5, sigma_z=0)


host = (np.random.default_rng(3).random((3, 40, 48)) * 1000).astype(np.float32)
reference = ndimage.gaussian_filter(host, sigma=(0, 1.5, 1.5), mode="nearest", truncate=4.0)
report = {"default": pyclesperanto_module_name()}
for func in (blur_prototype_detected, blur_prototype_declared, blur_new_detected, blur_new_declared):
    stack = convert_to(host, func.input_memory_type, None)  # what the pipeline's conversion makes
    given = pyclesperanto_package_of(stack)
    out = func(stack)
    recovered, recoveries = run_with_oom_recovery(
        func, convert_to(host, func.input_memory_type, None), {}, step="blur", well="A01",
        memory_type="pyclesperanto")
    report[func.__name__] = {
        "given": given,
        "out_package": pyclesperanto_package_of(out),
        "error": float(np.abs(to_host(out) - reference).max()),
        "dtype": str(to_host(out).dtype),
        "recovered_error": float(np.abs(to_host(recovered) - reference).max()),
        "recoveries": len(recoveries),
    }
try:
    blur_prototype_declared_wrongly(convert_to(host, "pyclesperanto"))
    report["wrong"] = None
except PyclesperantoPackageError as exc:
    report["wrong"] = [exc.got, exc.failed_in, str(exc)]
print(json.dumps(report))
'''


def _run_kernels(env_package: str | None) -> dict:
    env = dict(os.environ)
    env.pop(PYCLESPERANTO_ENV, None)
    if env_package is not None:
        env[PYCLESPERANTO_ENV] = env_package
    result = subprocess.run([sys.executable, "-c", _KERNELS], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _check_blurs(report: dict) -> None:
    for name, package in [
        ("blur_prototype_detected", PROTO),
        ("blur_prototype_declared", PROTO),
        ("blur_new_detected", CLE),
        ("blur_new_declared", CLE),
    ]:
        got = report[name]
        assert got["given"] == report["default"], name  # the pipeline's conversion: hcsgraph's package
        assert got["out_package"] == package, name  # the function ran on its own package's arrays
        assert got["dtype"] == "float32", name
        assert got["error"] < 1e-2, (name, got)  # values up to 1000: 1e-5 relative
        assert got["recovered_error"] < 1e-2 and got["recoveries"] == 0, (name, got)


def _check_wrong_declaration(report: dict) -> None:
    """Declared for pyclesperanto, written with the prototype: a clear error, not the prototype's own."""
    got, failed_in, message = report["wrong"]
    assert (got, failed_in) == (CLE, PROTO)
    assert "blur_prototype_declared_wrongly got pyclesperanto (>= 0.25) arrays" in message
    assert "failed inside pyclesperanto_prototype" in message
    assert "@pyclesperanto(package='pyclesperanto_prototype')" in message


@needs_both
def test_functions_of_either_package_run_on_what_hcsgraph_converts_to(require):
    require(MemoryType.PYCLESPERANTO)  # an OpenCL device
    report = _run_kernels(None)
    assert report["default"] == CLE
    _check_blurs(report)
    _check_wrong_declaration(report)


@needs_both
def test_the_same_when_hcsgraph_converts_to_the_prototype(require):
    require(MemoryType.PYCLESPERANTO)
    report = _run_kernels(PROTO)  # HCSGRAPH_PYCLESPERANTO=pyclesperanto_prototype
    assert report["default"] == PROTO
    _check_blurs(report)
    _check_wrong_declaration(report)
