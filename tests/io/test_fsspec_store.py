"""The URL store (``"fsspec"``) against a real S3 API (moto's server): the same conformance tests as
every other store, plus what only object stores need checked."""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pytest

from hcsgraph.io import FileManager, StorageRegistry, storage_registry
from hcsgraph.io.disk import DiskStorageBackend
from hcsgraph.io.fsspec_store import LINK_MAGIC, FsspecStorageBackend
from tests.io.test_conformance import BackendConformance, make_array
from tests.s3server import unique_prefix


class UrlBackend(StrEnum):
    FSSPEC = "fsspec"


class TestFsspecBackend(BackendConformance):
    name = UrlBackend.FSSPEC

    @pytest.fixture()
    def backend(self, s3_storage_options):
        return FsspecStorageBackend(storage_options=s3_storage_options)

    @pytest.fixture()
    def base(self, s3_storage_options):
        return unique_prefix("vfs")
