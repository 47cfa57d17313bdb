"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest

from tests.s3server import s3_bucket, s3_endpoint, s3_server, s3_storage_options  # noqa: F401 - fixtures

# PoCL's LLVM and TensorFlow's bundled LLVM clash when TensorFlow loads first. hcsgraph starts
# OpenCL before it imports TensorFlow; do it once here, before any test imports TensorFlow.
try:
    from hcsgraph.config import MemoryType
    from hcsgraph.memory.libraries import import_library

    import_library(MemoryType.PYCLESPERANTO)
except Exception:  # noqa: BLE001 - no OpenCL runtime: the OpenCL tests skip with their own reason
    pass


@pytest.fixture(scope="session")
def local_cluster():
    """A real LocalCluster with two worker processes, shared by the whole session."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
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
