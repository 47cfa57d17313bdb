"""Fixtures shared by every test folder."""

from __future__ import annotations

import importlib.util

import pytest

# PoCL's LLVM and TensorFlow's bundled LLVM clash when TensorFlow loads first (a segfault on the
# first OpenCL kernel build). Initialising OpenCL before anything imports TensorFlow avoids it.
if importlib.util.find_spec("pyclesperanto_prototype") is not None:
    try:
        import pyclesperanto_prototype as _cle

        _cle.get_device()
    except Exception:  # no OpenCL runtime: the OpenCL tests skip with their own reason
        pass


@pytest.fixture(scope="session")
def local_cluster():
    """A real LocalCluster with two worker processes, shared by the whole session."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        memory_limit="4GiB",
    )
    yield cluster
    cluster.close()


@pytest.fixture()
def client(local_cluster):
    """A Client connected to the shared LocalCluster."""
    from distributed import Client

    with Client(local_cluster) as c:
        yield c
