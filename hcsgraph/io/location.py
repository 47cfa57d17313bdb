"""Where data lives: the one module that tells local paths from URLs.

Everything in hcsgraph that touches storage outside the image stores (run state, markers, the lock,
``run.json``, tables, plate metadata files) goes through these functions, so that a path such as
``/results/plate07`` and a URL such as ``s3://bucket/results/plate07`` work the same way.

* A **URL** is ``<protocol>://...`` for any protocol fsspec knows (``s3``, ``gs``, ``az``, ``memory``,
  ...), read and written through `fsspec <https://filesystem-spec.readthedocs.io>`_. ``file://`` URLs
  are local paths. Everything else is a local path and is handled with the standard library (and
  :mod:`hcsgraph.io.atomic` for writes): local behaviour never depends on fsspec being installed.
* **Object stores** (:data:`OBJECT_STORE_PROTOCOLS`: S3, GCS, Azure, ...) have no directories: a
  directory exists while a key lies under its prefix. :func:`makedirs` writes an empty ``<dir>/``
  marker object so that the directory exists before anything is written into it; listings never show
  markers. One ``PUT`` of an object is atomic (readers see the old object or the new one), so
  :func:`write_bytes_atomic` is one ``PUT`` there; :func:`rename` is a copy and then a delete (not
  atomic); :func:`write_bytes_exclusive` is a conditional ``PUT`` (``If-None-Match: *``).
* **Credentials** come from fsspec's usual places (for S3: the ``AWS_*`` environment variables, the
  AWS config and credentials files, a profile, instance roles) plus an optional ``storage_options``
  mapping given to each function (fsspec's keyword arguments for the filesystem: for S3 ``key``,
  ``secret``, ``token``, ``profile``, ``client_kwargs={"endpoint_url": ...}``, ...). A URL may carry
  ``user:secret@`` (``s3://KEY:SECRET@bucket/...``); :func:`split_credentials` moves it into the
  options. Wrap options in :class:`StorageOptions` to pass them around: it pickles (to Dask workers)
  and its ``repr`` shows every secret as ``***``.
* **Timeouts** (S3): a request fails after :data:`S3_CONNECT_TIMEOUT_S` without a connection or
  :data:`S3_READ_TIMEOUT_S` without a byte of the answer, and is tried :data:`S3_MAX_ATTEMPTS` times
  in all (botocore's "standard" retry mode; s3fs adds no retries of its own). An endpoint that accepts
  connections and never answers therefore fails within :data:`S3_SILENT_ENDPOINT_BOUND_S` = 10 s
  (2 × 4 s, plus the back-off between the tries and the client's set-up). Options given in
  ``storage_options["config_kwargs"]`` (``connect_timeout``, ``read_timeout``, ``retries``) or
  ``storage_options["retries"]`` (s3fs's own retry loop, :data:`S3FS_RETRIES`) win.
* **Errors** are :class:`~hcsgraph.io.errors.StorageError` subclasses that are also the builtin kinds
  (``FileNotFoundError``, ``FileExistsError``, ``IsADirectoryError``, ``TimeoutError``, ...). A message
  names the path (a URL with its ``user:secret@`` shown as ``***@``) and, for URLs, the protocol as the
  backend; it never contains a value of ``key``, ``secret``, ``token``, ``password`` or any other
  credential option, nor the cause's text unscrubbed.
"""

from __future__ import annotations

import asyncio
import copy as _copy
import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

from hcsgraph.io import atomic
from hcsgraph.io.errors import (
    StorageDirectoryNotEmptyError,
    StorageError,
    StorageFileExistsError,
    StorageFileNotFoundError,
    StorageIsADirectoryError,
    StorageNotADirectoryError,
)
from hcsgraph.io.paths import _URL_RE, is_temporary, natural_sort, split_url

PathLike = str | os.PathLike[str]

OBJECT_STORE_PROTOCOLS = frozenset({
    "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2", "b2", "cos", "obs", "tos",
})
"""Protocols whose filesystems are object stores: no directories, atomic single-object writes."""

S3_PROTOCOLS = frozenset({"s3", "s3a"})
S3_CONNECT_TIMEOUT_S = 3.0
"""Seconds to wait for a connection to an S3 endpoint."""
S3_READ_TIMEOUT_S = 4.0
"""Seconds to wait for each read of an S3 answer (the first byte, then each further read)."""
S3_MAX_ATTEMPTS = 2
"""Tries per S3 request in all (timeouts, throttling and 5xx answers are tried again once)."""
S3_SILENT_ENDPOINT_BOUND_S = S3_MAX_ATTEMPTS * S3_READ_TIMEOUT_S + 2.0
"""Upper bound, in seconds, for one request to an endpoint that accepts and never answers: every try
times out reading, plus the back-off between tries (< 1 s) and the client's set-up (< 1 s)."""
MARKER_SUFFIX = "/"
"""Object stores: the key ``<dir>/`` (empty) marks a directory made by :func:`makedirs`."""

_USERINFO_RE = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@\s'\"]+)@")
_SECRET_WORDS = ("secret", "password", "passwd", "token", "credential", "signature", "sas", "private")
_SECRET_NAMES = frozenset({"key", "account_key", "access_key", "access_key_id", "aws_access_key_id",
                           "connection_string", "client_id", "api_key", "auth"})
REDACTED = "***"


# ---------------------------------------------------------------------------------------------
# paths and URLs


def protocol(path: PathLike) -> str | None:
    """The lower-case protocol of a URL (``"s3"``), or None for a local path (``file://`` included)."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        return None
    url = split_url(path)
    return None if url is None else url[0].lower()


def is_url(path: PathLike) -> bool:
    """True for ``<protocol>://...`` with any protocol but ``file`` (``file://`` URLs are local paths)."""
    return protocol(path) is not None


def is_object_store(path: PathLike) -> bool:
    """True for a URL of an object store (:data:`OBJECT_STORE_PROTOCOLS`)."""
    return protocol(path) in OBJECT_STORE_PROTOCOLS


def local_path(path: PathLike) -> str:
    """A local path as a string: ``file:///data/x`` → ``/data/x``; other local paths unchanged."""
    text = os.fspath(path)
    match = _URL_RE.match(text)
    if match and match["protocol"].lower() in ("file", "local"):
        rest = unquote(match["rest"])
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        return rest
    return text


def _split_url(url: str) -> tuple[str, str]:
    match = _URL_RE.match(url)
    assert match is not None
    return match["protocol"], match["rest"]


def normalize_url(url: str) -> str:
    """``proto://a//b/./c/`` → ``proto://a/b/c``: no empty, ``.`` or trailing segments; ``..`` is kept."""
    proto, rest = _split_url(url)
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    return f"{proto}://" + "/".join(parts)


def join(base: PathLike, *parts: PathLike) -> str:
    """``base`` joined with ``parts``. For URLs: ``/``-separated, and a part never replaces the base
    (leading slashes of parts are dropped); local paths join with :func:`os.path.join`."""
    text = os.fspath(base)
    if not is_url(text):
        return os.path.join(local_path(text), *(os.fspath(p) for p in parts))
    out = text.rstrip("/") if not text.endswith("://") else text
    for part in parts:
        piece = os.fspath(part).replace("\\", "/").strip("/")
        if piece:
            out = f"{out}{piece}" if out.endswith("://") else f"{out}/{piece}"
    return out


def absolute(path: PathLike) -> str:
    """:func:`os.path.abspath` of a local path (``file://`` URLs included); a URL is returned unchanged."""
    text = os.fspath(path)
    if is_url(text):
        return text
    return os.path.abspath(local_path(text))


def split(path: PathLike) -> tuple[str, str]:
    """``(parent, name)``: ``s3://b/out/run`` → ``("s3://b/out", "run")``; local paths like :func:`os.path.split`."""
    text = os.fspath(path)
    if not is_url(text):
        return os.path.split(local_path(text).rstrip(os.sep) or os.sep)
    proto, rest = _split_url(text.rstrip("/"))
    head, _, name = rest.rpartition("/")
    return (f"{proto}://{head}" if head else f"{proto}://"), name


def parent(path: PathLike) -> str:
    """The folder holding ``path`` (URL-safe)."""
    return split(path)[0]


def name(path: PathLike) -> str:
    """The last component of ``path`` (URL-safe)."""
    return split(path)[1]


def is_within(path: PathLike, folder: PathLike) -> bool:
    """True when ``path`` is ``folder`` or lies below it (textually, after normalisation; URLs and
    local paths never contain one another)."""
    a, b = os.fspath(path), os.fspath(folder)
    if is_url(a) != is_url(b):
        return False
    if is_url(a):
        a, b = normalize_url(a), normalize_url(b)
        return a == b or a.startswith(b.rstrip("/") + "/")
    a, b = os.path.abspath(local_path(a)), os.path.abspath(local_path(b))
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


# ---------------------------------------------------------------------------------------------
# credentials


def _is_secret_name(key: str) -> bool:
    lower = key.lower()
    return lower in _SECRET_NAMES or lower.endswith(("_key", "_key_id")) or any(w in lower for w in _SECRET_WORDS)


def redact(text: Any) -> str:
    """``text`` with the ``user:secret@`` part of every URL in it shown as ``***@``."""
    return _USERINFO_RE.sub(lambda m: f"{m['head']}{REDACTED}@", str(text))


def _secret_values(options: Mapping[str, Any] | None) -> list[str]:
    """Every credential value in ``options`` (nested mappings included), longest first."""
    found: list[str] = []

    def visit(mapping: Mapping[str, Any]) -> None:
        for key, value in mapping.items():
            if isinstance(value, Mapping):
                visit(value)
            elif _is_secret_name(str(key)) and isinstance(value, str | bytes) and len(value) >= 3:
                found.append(value.decode(errors="replace") if isinstance(value, bytes) else value)

    if options:
        visit(options)
    return sorted(set(found), key=len, reverse=True)


def scrub(text: Any, options: Mapping[str, Any] | None = None) -> str:
    """``text`` with URL credentials and every credential value of ``options`` replaced by ``***``."""
    out = redact(text)
    for secret in _secret_values(options):
        out = out.replace(secret, REDACTED)
    return out


def _redacted(value: Any, key: str = "") -> Any:
    if isinstance(value, Mapping):
        return {k: _redacted(v, str(k)) for k, v in value.items()}
    if key and _is_secret_name(key) and value is not None:
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    return value


class StorageOptions(Mapping[str, Any]):
    """fsspec storage options (read-only) whose ``repr`` and ``str`` never show a credential.

    Pass it wherever ``storage_options`` is accepted; it pickles with its values (so Dask workers get
    them), while ``repr``/``str`` (task reprs, logs, the dashboard) show ``key=***``, ``secret=***``.
    :meth:`token` is a digest that tells two sets of options apart without showing them.
    """

    __slots__ = ("_options",)

    def __init__(self, options: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        merged = dict(options or {})
        merged.update(more)
        object.__setattr__(self, "_options", merged)

    def __getitem__(self, key: str) -> Any:
        return self._options[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._options)

    def __len__(self) -> int:
        return len(self._options)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("StorageOptions is read-only")

    def __reduce__(self) -> tuple[Any, ...]:
        return (StorageOptions, (dict(self._options),))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._options) == dict(other)

    def __hash__(self) -> int:
        return hash(self.token())

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in _redacted(self._options).items())
        return f"StorageOptions({shown})"

    __str__ = __repr__

    def to_dict(self) -> dict[str, Any]:
        """A plain (mutable, deep-copied) dict of the options, secrets included: do not log it."""
        return _copy.deepcopy(self._options)

    def token(self) -> str:
        """A short digest of the options (equal options, equal token)."""
        text = json.dumps(self._options, sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __dask_tokenize__(self) -> str:
        return self.token()


def storage_options(options: Mapping[str, Any] | None) -> StorageOptions | None:
    """``options`` as :class:`StorageOptions` (None and empty mappings stay None)."""
    if options is None:
        return None
    if isinstance(options, StorageOptions):
        return options if len(options) else None
    if not isinstance(options, Mapping):
        raise TypeError(f"storage_options must be a mapping of fsspec options, not {type(options).__name__}")
    return StorageOptions(options) if options else None


def split_credentials(url: PathLike) -> tuple[str, dict[str, str]]:
    """``(url without user:secret@, options holding them)``: ``s3://K:S@b/x`` → ``("s3://b/x", {"key": "K",
    "secret": "S"})``; other protocols give ``username``/``password``. Local paths come back unchanged."""
    text = os.fspath(url)
    proto = protocol(text)
    if proto is None:
        return text, {}
    _, rest = _split_url(text)
    authority, slash, tail = rest.partition("/")
    if "@" not in authority:
        return text, {}
    userinfo, _, host = authority.rpartition("@")
    user, _, password = userinfo.partition(":")
    user, password = unquote(user), unquote(password)
    scheme = text[: text.index("://")]
    clean = f"{scheme}://{host}{slash}{tail}"
    if proto in S3_PROTOCOLS:
        found = {"key": user} | ({"secret": password} if password else {})
    else:
        found = {"username": user} | ({"password": password} if password else {})
    return clean, found


def fsspec_options(url: PathLike, options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``(clean url, the keyword arguments of its fsspec filesystem)``: ``options`` plus the URL's
    credentials, plus hcsgraph's defaults (for S3: timeouts, limited retries, no listing cache)."""
    clean, from_url = split_credentials(url)
    merged: dict[str, Any] = dict(options or {})
    for key, value in from_url.items():
        merged.setdefault(key, value)
    proto = protocol(clean)
    if proto in S3_PROTOCOLS:
        config = dict(merged.get("config_kwargs") or {})
        config.setdefault("connect_timeout", S3_CONNECT_TIMEOUT_S)
        config.setdefault("read_timeout", S3_READ_TIMEOUT_S)
        config.setdefault("retries", {"total_max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"})
        merged["config_kwargs"] = config
        merged.setdefault("use_listings_cache", False)  # other processes write: never serve stale listings
    return clean, merged


S3FS_RETRIES = 1
"""s3fs's own retry loop around botocore's: one try (botocore retries, see :data:`S3_MAX_ATTEMPTS`).
``storage_options={"retries": N}`` sets it (it is an attribute of the filesystem, not an option)."""


def filesystem(path: PathLike, storage_options: Mapping[str, Any] | None = None, *,
               asynchronous: bool = False) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` for a URL or a local path (fsspec's local filesystem).

    The filesystem is fsspec's cached instance for these options (one per process and thread);
    ``asynchronous=True`` gives one for use inside an event loop (zarr's ``FsspecStore``).
    """
    text = os.fspath(path)
    if not is_url(text):
        import fsspec

        return fsspec.filesystem("file"), os.path.abspath(local_path(text))
    clean, kwargs = fsspec_options(text, storage_options)
    retries = kwargs.pop("retries", S3FS_RETRIES) if protocol(clean) in S3_PROTOCOLS else None
    if asynchronous:
        kwargs["asynchronous"] = True
    try:
        import fsspec
    except ImportError as exc:
        raise StorageError(f"reading and writing URLs needs fsspec: pip install fsspec s3fs ({exc})",
                           path=redact(text), backend=protocol(text)) from None
    try:
        fs, fs_path = fsspec.url_to_fs(clean, **kwargs)
        if retries is not None:
            fs.retries = int(retries)
        return fs, fs_path
    except ImportError as exc:
        raise StorageError(f"no fsspec filesystem for {protocol(text)}:// is installed ({exc}); for S3: pip install s3fs",
                           path=redact(clean), backend=protocol(text)) from None
    except Exception as exc:  # noqa: BLE001 - bad options: reported without their values
        raise _error(exc, clean, storage_options, "cannot set up the filesystem") from None


# ---------------------------------------------------------------------------------------------
# errors


class StorageTimeoutError(StorageError, TimeoutError):
    """A store did not answer in time (see the module's timeouts)."""


class StorageConnectionError(StorageError, ConnectionError):
    """A store could not be reached."""


class StoragePermissionError(StorageError, PermissionError):
    """The store refused the request (credentials, bucket policy)."""


class StorageIOError(StorageError, OSError):
    """Any other failure of a store."""


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _error(exc: BaseException, path: str, options: Mapping[str, Any] | None, doing: str) -> StorageError:
    """``exc`` (from fsspec or its backend) as a StorageError naming ``path``, with every secret scrubbed."""
    if isinstance(exc, StorageError):
        return exc
    shown = redact(path)
    backend = protocol(path)
    names = _class_names(exc)
    detail = scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                   dict(options or {}) | split_credentials(path)[1])
    if names & {"ReadTimeoutError", "ConnectTimeoutError", "TimeoutError", "FSTimeoutError", "ServerTimeoutError",
                "timeout", "ConnectionTimeoutError", "SocketTimeoutError"}:
        bound = ""
        if backend in S3_PROTOCOLS:
            config = fsspec_options(path, options)[1]["config_kwargs"]
            tries = (config.get("retries") or {}).get("total_max_attempts", "?")
            bound = (f" (each request waits {config.get('connect_timeout')} s to connect and "
                     f"{config.get('read_timeout')} s for an answer, {tries} tries)")
        return StorageTimeoutError(f"{doing}: the store did not answer in time{bound}; {detail}", path=shown, backend=backend)
    if names & {"EndpointConnectionError", "ConnectionError", "ClientConnectorError", "ConnectionRefusedError",
                "ServerDisconnectedError", "ClientOSError"}:
        return StorageConnectionError(f"{doing}: cannot reach the store; {detail}", path=shown, backend=backend)
    if isinstance(exc, FileNotFoundError):
        return StorageFileNotFoundError(f"{doing}: no such file or directory", path=shown, backend=backend)
    if isinstance(exc, FileExistsError):
        return StorageFileExistsError(f"{doing}: the path exists already", path=shown, backend=backend)
    if isinstance(exc, IsADirectoryError):
        return StorageIsADirectoryError(f"{doing}: a directory exists at this path", path=shown, backend=backend)
    if isinstance(exc, NotADirectoryError):
        return StorageNotADirectoryError(f"{doing}: not a directory", path=shown, backend=backend)
    if isinstance(exc, PermissionError) or names & {"NoCredentialsError", "PartialCredentialsError"}:
        return StoragePermissionError(f"{doing}: access denied ({detail}); check the credentials "
                                      "(storage_options, AWS_* variables or profile)", path=shown, backend=backend)
    return StorageIOError(f"{doing}: {detail}", path=shown, backend=backend)


def error_for(exc: BaseException, path: PathLike, storage_options: Mapping[str, Any] | None = None,
              doing: str = "the store failed") -> StorageError:
    """``exc`` (raised by fsspec, its backend or zarr on the store of ``path``) as the StorageError this
    module raises: ``doing`` first, ``path`` redacted, no secret of ``storage_options`` in the text."""
    return _error(exc, split_credentials(os.fspath(path))[0], storage_options, doing)


def _call(doing: str, path: str, options: Mapping[str, Any] | None, func, *args: Any, **kwargs: Any) -> Any:
    try:
        return func(*args, **kwargs)
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - every store failure is reported with the URL, never a secret
        raise _error(exc, path, options, doing) from None


def call(doing: str, path: PathLike, func, *args: Any, storage_options: Mapping[str, Any] | None = None,
         **kwargs: Any) -> Any:
    """``func(*args, **kwargs)`` (an fsspec call on the store of ``path``), its failure raised as the
    StorageError this module raises: naming ``path`` (redacted), ``doing`` first, no secret."""
    return _call(doing, split_credentials(os.fspath(path))[0], storage_options, func, *args, **kwargs)


def _local_error(exc: OSError, path: str, doing: str) -> StorageError:
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return StorageFileNotFoundError(f"{doing}: no such file or directory", path=path)
    if isinstance(exc, FileExistsError):
        return StorageFileExistsError(f"{doing}: the path exists already", path=path)
    if isinstance(exc, IsADirectoryError):
        return StorageIsADirectoryError(f"{doing}: a directory exists at this path", path=path)
    if isinstance(exc, NotADirectoryError):
        return StorageNotADirectoryError(f"{doing}: not a directory", path=path)
    if isinstance(exc, PermissionError):
        return StoragePermissionError(f"{doing}: {exc.strerror or exc}", path=path)
    return StorageIOError(f"{doing}: {exc.strerror or exc}", path=path)


# ---------------------------------------------------------------------------------------------
# queries


def _remote(path: PathLike, options: Mapping[str, Any] | None) -> tuple[Any, str, str]:
    """``(fs, fs path, clean URL)`` of a URL."""
    text = os.fspath(path)
    fs, fs_path = filesystem(text, options)
    return fs, fs_path.rstrip("/") or fs_path, split_credentials(text)[0]


def info(path: PathLike, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """``{"type": "file"|"directory", "size": int}`` of ``path``, or None when nothing is there."""
    text = os.fspath(path)
    if not is_url(text):
        local = local_path(text)
        try:
            st = os.stat(local)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _local_error(exc, local, "cannot look up the path") from None
        return {"type": "directory" if os.path.isdir(local) else "file", "size": st.st_size}
    fs, fs_path, url = _remote(text, storage_options)
    try:
        found = fs.info(fs_path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001
        raise _error(exc, url, storage_options, "cannot look up the path") from None
    return {"type": "directory" if found.get("type") == "directory" else "file", "size": int(found.get("size") or 0)}


def exists(path: PathLike, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether a file or a directory (for object stores: any key under the prefix) is at ``path``."""
    text = os.fspath(path)
    if not is_url(text):
        return os.path.lexists(local_path(text))
    return info(text, storage_options) is not None


def isdir(path: PathLike, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``path`` is a directory (for object stores: a prefix with keys, or a :func:`makedirs` marker)."""
    text = os.fspath(path)
    if not is_url(text):
        return os.path.isdir(local_path(text))
    found = info(text, storage_options)
    return found is not None and found["type"] == "directory"


def isfile(path: PathLike, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``path`` is a file (an object)."""
    text = os.fspath(path)
    if not is_url(text):
        return os.path.isfile(local_path(text))
    found = info(text, storage_options)
    return found is not None and found["type"] == "file"


def _visible(name: str) -> bool:
    return bool(name) and not is_temporary(name)


def listdir(path: PathLike, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Names of the entries directly in the directory ``path``, in natural order (one listing request).

    Temporary entries of unfinished writes and directory markers are left out; a missing directory
    raises :class:`~hcsgraph.io.errors.StorageFileNotFoundError`.
    """
    return natural_sort(name for name, _ in scandir(path, storage_options))


def _list_level(fs: Any, fs_path: str, url: str) -> list[dict[str, Any]]:
    """The entries directly below ``fs_path``: for S3 exactly one delimited ``LIST`` (paginated)."""
    if protocol(url) in S3_PROTOCOLS and hasattr(fs, "_lsdir"):
        from fsspec.asyn import sync

        return sync(fs.loop, fs._lsdir, fs_path, refresh=True)
    try:
        return fs.ls(fs_path, detail=True)
    except FileNotFoundError:
        return []


def scandir(path: PathLike, storage_options: Mapping[str, Any] | None = None, *,
            missing_ok: bool = False) -> list[tuple[str, bool]]:
    """``(name, is_dir)`` of each entry directly in the directory ``path`` (see :func:`listdir`).

    ``missing_ok``: a missing directory (or a file) lists as empty, without the request that tells
    them apart.
    """
    text = os.fspath(path)
    if not is_url(text):
        local = local_path(text)
        try:
            with os.scandir(local) as entries:
                return [(e.name, e.is_dir()) for e in entries if _visible(e.name)]
        except OSError as exc:
            raise _local_error(exc, local, "cannot list the directory") from None
    fs, fs_path, url = _remote(text, storage_options)
    try:
        entries = _list_level(fs, fs_path, url)
    except Exception as exc:  # noqa: BLE001
        raise _error(exc, url, storage_options, "cannot list the directory") from None
    out = []
    for entry in entries:
        full = entry["name"]
        if full.rstrip("/") == fs_path:  # the directory's own marker, or a file listed as itself
            if entry.get("type") != "directory" and not full.endswith(MARKER_SUFFIX):
                raise StorageNotADirectoryError("cannot list the directory: not a directory", path=redact(url),
                                                backend=protocol(url))
            continue
        base = full.rstrip("/").rsplit("/", 1)[-1]
        if full.endswith(MARKER_SUFFIX) and entry.get("type") != "directory":
            out.append((base, True))  # a sub-directory known only by its marker
        elif _visible(base):
            out.append((base, entry.get("type") == "directory"))
    if not entries and not missing_ok:
        found = info(text, storage_options)
        if found is None:
            raise StorageFileNotFoundError("cannot list the directory: no such directory", path=redact(url),
                                           backend=protocol(url))
        if found["type"] == "file":
            raise StorageNotADirectoryError("cannot list the directory: not a directory", path=redact(url),
                                            backend=protocol(url))
    return list(dict(out).items())


def find(path: PathLike, storage_options: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Every file below the directory ``path``: ``{relative "/"-separated path: size in bytes}``.

    One recursive listing (for object stores: one paginated ``LIST`` of the prefix, 1,000 keys a
    request), never a request per file. Directory markers and temporary entries are left out; hidden
    names are kept (callers decide). A missing directory gives ``{}``.
    """
    text = os.fspath(path)
    if not is_url(text):
        top = local_path(text)
        found: dict[str, int] = {}
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if _visible(d)]
            rel = os.path.relpath(folder, top)
            for file in files:
                if _visible(file):
                    key = file if rel == "." else f"{rel}/{file}".replace(os.sep, "/")
                    found[key] = os.path.getsize(os.path.join(folder, file))
        return found
    fs, fs_path, url = _remote(text, storage_options)
    return _walk(fs, fs_path, url, storage_options)[0]


def _walk(fs: Any, fs_path: str, url: str, options: Mapping[str, Any] | None) -> tuple[dict[str, int], list[str]]:
    """``(files as :func:`find` gives them, every directory-marker key)`` below ``fs_path``: one listing."""
    try:
        entries = fs.find(fs_path, detail=True, withdirs=False)
    except FileNotFoundError:
        return {}, []
    except Exception as exc:  # noqa: BLE001
        raise _error(exc, url, options, "cannot list the directory") from None
    prefix = fs_path.rstrip("/") + "/"
    found = {}
    for full, entry in entries.items():
        if not full.startswith(prefix) or full.endswith(MARKER_SUFFIX) or entry.get("type") == "directory":
            continue
        rel = full[len(prefix):]
        if any(is_temporary(part) for part in rel.split("/")):
            continue
        found[rel] = int(entry.get("size") or 0)
    return found, [k for k in entries if k.endswith(MARKER_SUFFIX)]


# ---------------------------------------------------------------------------------------------
# reads


def read_bytes(path: PathLike, storage_options: Mapping[str, Any] | None = None, *, start: int | None = None,
               end: int | None = None) -> bytes:
    """The bytes of the file ``path`` (``start``/``end``: a byte range, one ranged ``GET`` on object stores)."""
    text = os.fspath(path)
    if not is_url(text):
        local = local_path(text)
        try:
            with open(local, "rb") as handle:
                if start:
                    handle.seek(start)
                return handle.read() if end is None else handle.read(end - (start or 0))
        except OSError as exc:
            raise _local_error(exc, local, "cannot read the file") from None
    fs, fs_path, url = _remote(text, storage_options)
    return _call("cannot read the file", url, storage_options, fs.cat_file, fs_path, start=start, end=end,
                 **_cat_options(url, start, end))


def _cat_options(url: str, start: int | None = None, end: int | None = None) -> dict[str, Any]:
    """S3: a whole-object read is one ``GET`` (s3fs would first ask the size, to split big objects)."""
    return {"max_concurrency": 1} if protocol(url) in S3_PROTOCOLS and start is None and end is None else {}


READ_CONCURRENCY = 64
"""Requests in flight at once in :func:`read_many`."""


def read_many(paths: list[str], storage_options: Mapping[str, Any] | None = None) -> dict[str, bytes | None]:
    """``{path: bytes, or None when missing}`` for many files; at URLs one ``GET`` each, up to
    :data:`READ_CONCURRENCY` at once (all paths of one call share a filesystem: one protocol and options)."""
    out: dict[str, bytes | None] = {}
    remote = [p for p in paths if is_url(p)]
    for p in paths:
        if not is_url(p):
            try:
                out[p] = read_bytes(p)
            except StorageFileNotFoundError:
                out[p] = None
    if not remote:
        return out
    fs, _, first = _remote(remote[0], storage_options)
    kwargs = _cat_options(first)
    targets = {p: fs._strip_protocol(split_credentials(p)[0]) for p in remote}
    if getattr(fs, "async_impl", False):
        from fsspec.asyn import sync

        async def gather() -> list[Any]:
            limit = asyncio.Semaphore(READ_CONCURRENCY)

            async def one(path: str) -> Any:
                async with limit:
                    try:
                        return await fs._cat_file(path, **kwargs)
                    except Exception as exc:  # noqa: BLE001 - sorted out below, per path
                        return exc

            return await asyncio.gather(*(one(t) for t in targets.values()))

        results = sync(fs.loop, gather)
    else:
        results = []
        for target in targets.values():
            try:
                results.append(fs.cat_file(target))
            except Exception as exc:  # noqa: BLE001
                results.append(exc)
    for original, value in zip(targets, results, strict=True):
        if isinstance(value, FileNotFoundError):
            out[original] = None
        elif isinstance(value, BaseException):
            raise _error(value, split_credentials(original)[0], storage_options, "cannot read the file")
        else:
            out[original] = bytes(value)
    return out


def read_text(path: PathLike, storage_options: Mapping[str, Any] | None = None, encoding: str = "utf-8") -> str:
    """The text of the file ``path``."""
    return read_bytes(path, storage_options).decode(encoding)


def read_json(path: PathLike, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The JSON document in the file ``path``."""
    raw = read_bytes(path, storage_options)
    try:
        return json.loads(raw)
    except ValueError as exc:
        shown = redact(os.fspath(path))
        raise StorageIOError(f"the file is not valid JSON: {exc}", path=shown, backend=protocol(shown)) from None


# ---------------------------------------------------------------------------------------------
# writes


def makedirs(path: PathLike, storage_options: Mapping[str, Any] | None = None) -> None:
    """Create the directory ``path`` and its parents when missing.

    On an object store an existing prefix is left alone, a missing one gets an empty ``<path>/`` marker
    object (one ``PUT``), so that :func:`isdir` is true before anything is written into it.
    """
    text = os.fspath(path)
    if not is_url(text):
        local = local_path(text)
        try:
            os.makedirs(local, exist_ok=True)
        except OSError as exc:
            raise atomic.write_error(exc, local) from None
        return
    fs, fs_path, url = _remote(text, storage_options)
    if protocol(url) in OBJECT_STORE_PROTOCOLS:
        found = info(text, storage_options)
        if found is not None:
            if found["type"] != "directory":
                raise StorageNotADirectoryError("cannot create the directory: a file exists at this path",
                                                path=redact(url), backend=protocol(url))
            return
        _call("cannot create the directory", url, storage_options, fs.pipe_file, fs_path + MARKER_SUFFIX, b"")
    else:
        _call("cannot create the directory", url, storage_options, fs.makedirs, fs_path, exist_ok=True)


def write_bytes_atomic(path: PathLike, data: bytes, storage_options: Mapping[str, Any] | None = None, *,
                       fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never a part.

    Local paths: :func:`hcsgraph.io.atomic.write_bytes_atomic` (a synced temporary file renamed into
    place; parents are created). Object stores: one ``PUT`` (parents are implied). Other fsspec
    filesystems: their own write of the whole file.
    """
    text = os.fspath(path)
    if not is_url(text):
        atomic.write_bytes_atomic(local_path(text), bytes(data), fsync=fsync)
        return
    fs, fs_path, url = _remote(text, storage_options)
    if protocol(url) not in OBJECT_STORE_PROTOCOLS:
        _call("cannot write the file", url, storage_options, fs.makedirs, fs._parent(fs_path), exist_ok=True)
    _call("cannot write the file", url, storage_options, fs.pipe_file, fs_path, bytes(data))


def write_text_atomic(path: PathLike, text: str, storage_options: Mapping[str, Any] | None = None,
                      encoding: str = "utf-8", *, fsync: bool = True) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`write_bytes_atomic`), no newline translation."""
    write_bytes_atomic(path, text.encode(encoding), storage_options, fsync=fsync)


def write_json_atomic(path: PathLike, payload: Any, storage_options: Mapping[str, Any] | None = None, *,
                      sort_keys: bool = True, fsync: bool = True) -> None:
    """Write ``payload`` as JSON atomically, formatted as :func:`hcsgraph.io.atomic.write_json_atomic` does."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=sort_keys, default=str), storage_options,
                      fsync=fsync)


def write_bytes_exclusive(path: PathLike, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    """Create the file ``path`` holding ``data``; raise :class:`~hcsgraph.io.errors.StorageFileExistsError`
    (a ``FileExistsError``) if it exists. For a lock file.

    Local paths: ``O_CREAT | O_EXCL`` (parents created). S3: a conditional ``PUT`` (``If-None-Match: *``),
    race-free on AWS S3 and MinIO. Other URLs: an existence check, then the write (not race-free).
    """
    text = os.fspath(path)
    if not is_url(text):
        local = local_path(text)
        try:
            os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise _local_error(exc, local, "cannot create the file") from None
        try:
            view = memoryview(bytes(data))
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            os.close(fd)
            os.unlink(local)
            raise atomic.write_error(exc, local) from None
        os.close(fd)
        return
    fs, fs_path, url = _remote(text, storage_options)
    if protocol(url) in S3_PROTOCOLS:
        _call("cannot create the file", url, storage_options, fs.pipe_file, fs_path, bytes(data), mode="create")
        return
    if exists(text, storage_options):
        raise StorageFileExistsError("cannot create the file: the path exists already", path=redact(url),
                                     backend=protocol(url))
    write_bytes_atomic(text, data, storage_options)


def remove(path: PathLike, storage_options: Mapping[str, Any] | None = None, *, recursive: bool = False,
           missing_ok: bool = False) -> None:
    """Remove the file or directory ``path``; a non-empty directory only with ``recursive=True``.

    A missing path raises :class:`~hcsgraph.io.errors.StorageFileNotFoundError` unless ``missing_ok``.
    On object stores a recursive remove deletes every key under the prefix (batched deletes).
    """
    text = os.fspath(path)
    if not is_url(text):
        local = local_path(text)
        try:
            if os.path.islink(local) or not os.path.isdir(local):
                os.unlink(local)
            elif recursive:
                shutil.rmtree(local)
            else:
                os.rmdir(local)
        except FileNotFoundError:
            if not missing_ok:
                raise StorageFileNotFoundError("cannot remove: no such file or directory", path=local) from None
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise StorageDirectoryNotEmptyError("cannot remove: the directory is not empty; pass recursive=True",
                                                    path=local) from None
            raise _local_error(exc, local, "cannot remove") from None
        return
    fs, fs_path, url = _remote(text, storage_options)
    found = info(text, storage_options)
    if found is None:
        if not missing_ok:
            raise StorageFileNotFoundError("cannot remove: no such file or directory", path=redact(url),
                                           backend=protocol(url))
        return
    if found["type"] == "file":
        _call("cannot remove", url, storage_options, fs.rm_file, fs_path)
        return
    if not recursive and scandir(text, storage_options):
        raise StorageDirectoryNotEmptyError("cannot remove: the directory is not empty; pass recursive=True",
                                            path=redact(url), backend=protocol(url))
    if protocol(url) in OBJECT_STORE_PROTOCOLS:
        files, markers = _walk(fs, fs_path, url, storage_options)
        marker = fs_path + MARKER_SUFFIX
        keys = [f"{fs_path}/{rel}" for rel in files] + [k for k in markers if k != marker] + [marker]
        _call("cannot remove", url, storage_options, _rm_keys, fs, keys)
    else:
        _call("cannot remove", url, storage_options, fs.rm, fs_path, recursive=True)


def _rm_keys(fs: Any, keys: list[str]) -> None:
    """Delete object keys (S3: ``DeleteObjects`` of up to 1,000 keys a request); missing keys are fine.

    A key the store refuses to delete raises (S3 reports those per key, in an answer that succeeds).
    """
    if not keys:
        return
    from fsspec.asyn import sync

    if hasattr(fs, "_call_s3"):
        async def run_s3() -> None:
            for i in range(0, len(keys), 1000):
                chunk = keys[i:i + 1000]
                bucket = fs.split_path(chunk[0])[0]
                objects = [{"Key": fs.split_path(k)[1]} for k in chunk]
                out = await fs._call_s3("delete_objects", Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
                errors = out.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise OSError(errno.EIO, f"{len(errors)} object(s) were not deleted: {first.get('Code')} "
                                             f"{first.get('Message', '')} ({bucket}/{first.get('Key')})")
            for key in keys:
                fs.invalidate_cache(key)

        sync(fs.loop, run_s3)
        return
    for key in keys:
        try:
            fs.rm_file(key)
        except FileNotFoundError:
            pass


def copy(src: PathLike, dst: PathLike, storage_options: Mapping[str, Any] | None = None) -> None:
    """Copy the file or directory tree ``src`` to ``dst`` (files at ``dst`` are replaced).

    Local paths: :func:`shutil.copy2` / :func:`shutil.copytree`. URLs: a server-side copy of each object
    (directory markers included; an empty directory gets a marker), no data through this process.
    """
    a, b = os.fspath(src), os.fspath(dst)
    if is_url(a) != is_url(b):
        raise StorageError("cannot copy between a local path and a URL", path=redact(f"{a} -> {b}"))
    if not is_url(a):
        try:
            if os.path.isdir(local_path(a)):
                shutil.copytree(local_path(a), local_path(b), symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(local_path(a), local_path(b))
        except OSError as exc:
            raise _local_error(exc, local_path(a), "cannot copy") from None
        return
    fs, src_path, url = _remote(a, storage_options)
    _, dst_path, _ = _remote(b, storage_options)
    found = info(a, storage_options)
    if found is None:
        raise StorageFileNotFoundError("cannot copy: no such file or directory", path=redact(url), backend=protocol(url))
    if found["type"] == "file":
        _call("cannot copy", url, storage_options, _copy_objects, fs, [(src_path, dst_path)])
        return
    found_files, found_markers = _walk(fs, src_path, url, storage_options)
    files = [(f"{src_path}/{k}", f"{dst_path}/{k}") for k in found_files]
    if protocol(url) not in OBJECT_STORE_PROTOCOLS:
        _call("cannot copy", url, storage_options, fs.makedirs, dst_path, exist_ok=True)
        for _, target in files:
            _call("cannot copy", url, storage_options, fs.makedirs, fs._parent(target), exist_ok=True)
        _call("cannot copy", url, storage_options, _copy_objects, fs, files)
        return
    markers = [dst_path + k[len(src_path):] for k in found_markers]
    if not files and not markers:
        markers = [dst_path + MARKER_SUFFIX]
    _call("cannot copy", url, storage_options, _copy_objects, fs, files, markers)


def _copy_objects(fs: Any, pairs: list[tuple[str, str]], markers: list[str] = ()) -> None:
    """Server-side copies ``src → dst`` and empty ``markers``, concurrently where the filesystem is async."""
    if not getattr(fs, "async_impl", False):
        for src, dst in pairs:
            fs.cp_file(src, dst)
        for marker in markers:
            fs.pipe_file(marker, b"")
        return
    from fsspec.asyn import sync

    async def run() -> None:
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(coro_factory) -> None:
            async with limit:
                await coro_factory()

        jobs = [one(lambda s=src, d=dst: fs._cp_file(s, d)) for src, dst in pairs]
        jobs += [one(lambda m=marker: fs._pipe_file(m, b"")) for marker in markers]
        await asyncio.gather(*jobs)

    sync(fs.loop, run)


def rename(src: PathLike, dst: PathLike, storage_options: Mapping[str, Any] | None = None) -> None:
    """Move ``src`` (a file or a directory) to ``dst``, replacing a file at ``dst``.

    Local paths: :func:`os.replace` (atomic on one filesystem). URLs: :func:`copy` (server-side), then
    the delete of the source: not atomic; a failure part-way leaves both copies.
    """
    a, b = os.fspath(src), os.fspath(dst)
    if is_url(a) != is_url(b):
        raise StorageError("cannot rename between a local path and a URL", path=redact(f"{a} -> {b}"))
    if not is_url(a):
        try:
            os.replace(local_path(a), local_path(b))
        except OSError as exc:
            raise _local_error(exc, local_path(a), "cannot rename") from None
        return
    copy(a, b, storage_options)
    remove(a, storage_options, recursive=True)


__all__ = [
    "OBJECT_STORE_PROTOCOLS",
    "S3_CONNECT_TIMEOUT_S",
    "S3_MAX_ATTEMPTS",
    "S3_READ_TIMEOUT_S",
    "S3FS_RETRIES",
    "READ_CONCURRENCY",
    "S3_SILENT_ENDPOINT_BOUND_S",
    "StorageConnectionError",
    "StorageIOError",
    "StorageOptions",
    "StoragePermissionError",
    "StorageTimeoutError",
    "absolute",
    "call",
    "copy",
    "error_for",
    "exists",
    "filesystem",
    "find",
    "fsspec_options",
    "info",
    "is_object_store",
    "is_url",
    "is_within",
    "isdir",
    "isfile",
    "join",
    "listdir",
    "local_path",
    "makedirs",
    "name",
    "normalize_url",
    "parent",
    "protocol",
    "read_bytes",
    "read_json",
    "read_many",
    "read_text",
    "redact",
    "remove",
    "rename",
    "scandir",
    "scrub",
    "split",
    "split_credentials",
    "storage_options",
    "write_bytes_atomic",
    "write_bytes_exclusive",
    "write_json_atomic",
    "write_text_atomic",
]
