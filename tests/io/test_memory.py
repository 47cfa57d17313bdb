"""Memory backend: stored data cannot be changed by callers."""

from __future__ import annotations

import numpy as np
import pytest

from hcsgraph.io.memory import MemoryStorageBackend


@pytest.fixture()
def store():
    return MemoryStorageBackend()


def test_array_is_copied_on_save_and_loaded_read_only(store):
    array = np.arange(6, dtype=np.uint16).reshape(2, 3)
    store.save(array, "/mem/a")
    array[0, 0] = 99
    loaded = store.load("/mem/a")
    assert loaded[0, 0] == 0
    with pytest.raises(ValueError, match="read-only"):
        loaded[0, 0] = 5
    with pytest.raises(ValueError):
        loaded.flags.writeable = True
    assert np.shares_memory(loaded, store.load("/mem/a"))  # no copy on load


def test_mutable_objects_are_deep_copied(store):
    table = {"A01": [1, 2]}
    store.save(table, "/mem/table")
    table["A01"].append(3)
    loaded = store.load("/mem/table")
    loaded["A01"].append(4)
    assert store.load("/mem/table") == {"A01": [1, 2]}


def test_any_object_and_immutable_values(store):
    store.save((1, "a"), "/mem/t")
    assert store.load("/mem/t") == (1, "a")
    store.save({1, 2}, "/mem/s")
    assert store.load("/mem/s") == {1, 2}


def test_virtual_paths_need_no_directories(store):
    store.save(np.zeros(2), "/memory/temp_array")
    assert store.is_dir("/memory") and store.list_files("/memory") == ["/memory/temp_array"]
    store.save(1, "relative/key")
    assert store.list_files("relative") == ["relative/key"]
