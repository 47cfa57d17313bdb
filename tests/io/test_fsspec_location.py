"""hcsgraph.io.location: local paths and URLs, credentials, timeouts, and object-store semantics on a
real S3 API (moto's server)."""

from __future__ import annotations

import json
import os
import pickle
import socket
import threading
import time
import traceback

import pytest

from hcsgraph.io import location
from hcsgraph.io.errors import (
    StorageDirectoryNotEmptyError,
    StorageError,
    StorageFileExistsError,
    StorageFileNotFoundError,
)
from hcsgraph.io.location import StorageOptions, StorageTimeoutError
from hcsgraph.plate import open_plate
from tests.s3server import unique_prefix

SECRET = "hunter2-SECRET-value-9b1f"
KEY_ID = "AKIDEXAMPLEKEY77"


# ---------------------------------------------------------------------------------------------
# paths and URLs, no server


def test_urls_and_local_paths(tmp_path):
    assert location.is_url("s3://bucket/x") and location.is_url("gs://b") and location.is_url("memory://x")
    assert not location.is_url("/data/x") and not location.is_url("relative/x") and not location.is_url(tmp_path)
    assert not location.is_url("file:///data/x") and location.local_path("file:///data/x") == "/data/x"
    assert location.protocol("S3://b/k") == "s3" and location.protocol("/x") is None
    assert location.join("s3://b/out/", "run.json") == "s3://b/out/run.json"
    assert location.join("s3://b/out", "/.hcsgraph/", "wells", "A01.json") == "s3://b/out/.hcsgraph/wells/A01.json"
    assert location.join("/data/out", "run.json") == os.path.join("/data/out", "run.json")
    assert location.absolute("s3://b/out") == "s3://b/out"
    assert location.absolute("out") == os.path.abspath("out")
    assert location.absolute("file:///data/out") == "/data/out"
    assert location.split("s3://b/results/plate07") == ("s3://b/results", "plate07")
    assert location.split("s3://b/plate07/") == ("s3://b", "plate07")
    assert location.parent("/data/out/run") == "/data/out" and location.name("s3://b/x/run.json") == "run.json"
    assert location.is_within("s3://b/out/a", "s3://b/out") and not location.is_within("s3://b/outside", "s3://b/out")
    assert not location.is_within("/b/out", "s3://b/out")
    assert location.normalize_url("s3://b//x/./y/") == "s3://b/x/y"


def test_credentials_are_split_from_urls_and_redacted():
    clean, options = location.split_credentials(f"s3://{KEY_ID}:{SECRET}@bucket/plates/p07")
    assert clean == "s3://bucket/plates/p07" and options == {"key": KEY_ID, "secret": SECRET}
    assert location.split_credentials("sftp://me:pw@host/x")[1] == {"username": "me", "password": "pw"}
    assert location.split_credentials("s3://bucket/a@b")[1] == {}  # '@' in a key is not userinfo
    text = location.redact(f"cannot read s3://{KEY_ID}:{SECRET}@bucket/x and https://u:p@h/y")
    assert SECRET not in text and KEY_ID not in text and "s3://***@bucket/x" in text and "https://***@h/y" in text
    scrubbed = location.scrub(f"token {SECRET} in a message", {"client_kwargs": {"aws_secret_access_key": SECRET}})
    assert SECRET not in scrubbed


def test_storage_options_never_show_secrets_and_pickle():
    options = StorageOptions({"key": KEY_ID, "secret": SECRET, "token": "tok-123", "profile": "lab",
                              "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000",
                                                "aws_session_token": "sess-456"}})
    for text in (repr(options), str(options), f"{options}", repr({"o": options})):
        for hidden in (KEY_ID, SECRET, "tok-123", "sess-456"):
            assert hidden not in text
    assert "profile='lab'" in repr(options) and "http://127.0.0.1:9000" in repr(options)
    clone = pickle.loads(pickle.dumps(options))
    assert clone == options and dict(clone)["secret"] == SECRET and clone.token() == options.token()
    assert location.storage_options(None) is None and location.storage_options({}) is None
    with pytest.raises(AttributeError):
        options.secret = "x"
    from dask.base import tokenize

    assert tokenize(options) == tokenize(StorageOptions(dict(options)))


def test_s3_options_get_timeouts_and_limited_retries():
    url, kwargs = location.fsspec_options("s3://k:s@bucket/x", {"client_kwargs": {"endpoint_url": "http://e"}})
    assert url == "s3://bucket/x" and kwargs["key"] == "k" and kwargs["secret"] == "s"
    assert kwargs["config_kwargs"] == {"connect_timeout": location.S3_CONNECT_TIMEOUT_S,
                                       "read_timeout": location.S3_READ_TIMEOUT_S,
                                       "retries": {"total_max_attempts": location.S3_MAX_ATTEMPTS, "mode": "standard"}}
    _, mine = location.fsspec_options("s3://bucket/x", {"config_kwargs": {"read_timeout": 60}})
    assert mine["config_kwargs"]["read_timeout"] == 60  # the caller's options win
    fs, path = location.filesystem("s3://bucket/x", {"key": "k", "secret": "s", "retries": 3})
    assert path == "bucket/x" and fs.retries == 3


def test_local_paths_use_atomic_writes(tmp_path):
    target = tmp_path / "out" / ".hcsgraph" / "state.json"
    location.write_json_atomic(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2, sort_keys=True)
    assert location.read_json(target) == {"a": [1, 2], "b": 1}
    assert location.listdir(tmp_path / "out") == [".hcsgraph"] and location.isdir(tmp_path / "out")
    location.write_bytes_exclusive(tmp_path / "lock", b"me")
    with pytest.raises(StorageFileExistsError):
        location.write_bytes_exclusive(tmp_path / "lock", b"you")
    assert (tmp_path / "lock").read_bytes() == b"me"
    size = target.stat().st_size
    location.rename(tmp_path / "out", tmp_path / "moved")
    assert location.find(tmp_path / "moved") == {".hcsgraph/state.json": size}
    with pytest.raises(StorageDirectoryNotEmptyError):
        location.remove(tmp_path / "moved")
    location.remove(tmp_path / "moved", recursive=True)
    assert not location.exists(tmp_path / "moved")
    with pytest.raises(StorageFileNotFoundError):
        location.remove(tmp_path / "moved")
    location.remove(tmp_path / "moved", missing_ok=True)


# ---------------------------------------------------------------------------------------------
# object storage


def test_object_store_files_and_directories(s3_server, s3_storage_options):
    base = unique_prefix("loc")
    so = s3_storage_options
    assert not location.exists(base, so)
    location.makedirs(f"{base}/out/.hcsgraph", so)
    assert location.isdir(f"{base}/out/.hcsgraph", so) and location.isdir(f"{base}/out", so)
    assert location.listdir(f"{base}/out", so) == [".hcsgraph"] and location.listdir(f"{base}/out/.hcsgraph", so) == []
    mark = s3_server.count()
    location.write_json_atomic(f"{base}/out/run.json", {"b": 1, "a": 2}, so)
    assert [r[0] for r in s3_server.since(mark)] == ["PUT"]  # one PUT: atomic on an object store
    assert location.read_json(f"{base}/out/run.json", so) == {"a": 2, "b": 1}
    location.write_text_atomic(f"{base}/out/tables/cell_counts.csv", "well,count\nA01,3\n", so)
    assert location.read_bytes(f"{base}/out/tables/cell_counts.csv", so, start=5, end=10) == b"count"
    assert location.listdir(f"{base}/out", so) == [".hcsgraph", "run.json", "tables"]
    manifest = json.dumps({"a": 2, "b": 1}, indent=2, sort_keys=True)
    assert location.find(f"{base}/out", so) == {"run.json": len(manifest), "tables/cell_counts.csv": 17}
    assert location.isfile(f"{base}/out/run.json", so) and not location.isfile(f"{base}/out", so)
    assert location.info(f"{base}/out/run.json", so) == {"type": "file", "size": len(manifest)}
    assert location.read_text(f"{base}/out/run.json", so) == manifest
    location.write_bytes_exclusive(f"{base}/.out.hcsgraph-lock", b'{"run_id": "r1"}', so)
    with pytest.raises(StorageFileExistsError) as info:
        location.write_bytes_exclusive(f"{base}/.out.hcsgraph-lock", b'{"run_id": "r2"}', so)
    assert isinstance(info.value, FileExistsError) and f"{base}/.out.hcsgraph-lock" in str(info.value)
    assert location.read_json(f"{base}/.out.hcsgraph-lock", so) == {"run_id": "r1"}
    location.copy(f"{base}/out", f"{base}/copy", so)
    assert location.find(f"{base}/copy", so) == location.find(f"{base}/out", so)
    assert location.isdir(f"{base}/copy/.hcsgraph", so)  # the marker came along
    location.rename(f"{base}/out", f"{base}/aside", so)
    assert not location.exists(f"{base}/out", so)
    assert location.read_json(f"{base}/aside/run.json", so) == {"a": 2, "b": 1}
    location.rename(f"{base}/aside/run.json", f"{base}/aside/run-old.json", so)
    assert location.listdir(f"{base}/aside", so) == [".hcsgraph", "run-old.json", "tables"]
    with pytest.raises(StorageDirectoryNotEmptyError):
        location.remove(f"{base}/aside", so)
    location.remove(f"{base}/aside", so, recursive=True)
    assert not location.exists(f"{base}/aside", so)
    location.remove(f"{base}/aside", so, missing_ok=True)
    with pytest.raises(StorageFileNotFoundError) as info:
        location.read_bytes(f"{base}/aside/run.json", so)
    assert isinstance(info.value, FileNotFoundError) and f"{base}/aside/run.json" in str(info.value)
    many = location.read_many([f"{base}/copy/run.json", f"{base}/nothing.json"], so)
    assert many == {f"{base}/copy/run.json": location.read_bytes(f"{base}/copy/run.json", so),
                    f"{base}/nothing.json": None}


def test_errors_never_show_credentials(s3_endpoint):
    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "key": KEY_ID, "secret": SECRET}
    url = f"{unique_prefix('err')}/missing.json"
    for call in (lambda: location.read_json(url, options),
                 lambda: location.read_json(url.replace("s3://", f"s3://{KEY_ID}:{SECRET}@"),
                                            {"client_kwargs": {"endpoint_url": s3_endpoint}}),
                 lambda: location.remove(url, options),
                 lambda: location.listdir(url, options)):
        with pytest.raises(StorageError) as info:
            call()
        text = "".join(traceback.format_exception(info.value))
        assert url in str(info.value) and SECRET not in text and KEY_ID not in text


@pytest.fixture()
def silent_endpoint():
    """A local socket that accepts connections and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", held
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


SLACK_S = 2.0  # for a loaded machine (2 shared cores)


@pytest.mark.parametrize("what", ["read", "open_plate"])
def test_a_silent_endpoint_fails_in_bounded_time_naming_the_url(silent_endpoint, what):
    endpoint, held = silent_endpoint
    options = {"client_kwargs": {"endpoint_url": endpoint}, "key": KEY_ID, "secret": SECRET}
    url = "s3://bucket/plates/p07"
    start = time.monotonic()
    with pytest.raises(StorageTimeoutError) as info:
        if what == "read":
            location.read_bytes(f"{url}/Index.idx.xml", options)
        else:
            open_plate(url, storage_options=options)
    elapsed = time.monotonic() - start
    assert elapsed < location.S3_SILENT_ENDPOINT_BOUND_S + SLACK_S, elapsed
    assert isinstance(info.value, TimeoutError) and held  # the endpoint did accept
    message = str(info.value)
    assert url in message and "did not answer in time" in message
    text = "".join(traceback.format_exception(info.value))
    assert SECRET not in text and KEY_ID not in text
