"""Runs in object stores: a path string such as ``s3://bucket/run/`` to a filesystem and a path
in it, and the few operations the reader needs (look up, list, glob, open).

Part of the reading layer, with io.py: the only modules that import pyarrow, and fsspec for the
stores pyarrow has no filesystem of its own for. S3, GCS and Azure use pyarrow's filesystems,
which take credentials, endpoints and regions from each store's own environment variables and
configuration files; ``hf://`` and ``http(s)://`` go through fsspec (the optional extra
``metricdiff[cloud]``), imported only when such a path is given. Files are opened for random
access, so a Parquet reader fetches the footer and the column chunks it reads, never the whole
object. Every error a store raises becomes one InputError naming the path and the store's
reason.
"""

from __future__ import annotations

import fnmatch
import os
import re
from contextlib import contextmanager
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import InputError

# scheme -> the store's name in messages
PYARROW_STORES = {"s3": "S3", "gs": "GCS", "gcs": "GCS", "abfs": "Azure", "abfss": "Azure"}
FSSPEC_STORES = {"hf": "Hugging Face", "http": "HTTP", "https": "HTTP"}
CLOUD_EXTRA = "pip install 'metricdiff[cloud]'"
# Where each store's client looks for credentials, for a message that says they failed
CREDENTIALS = {
    "S3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or ~/.aws/credentials",
    "GCS": "GOOGLE_APPLICATION_CREDENTIALS, or gcloud auth application-default login",
    "Azure": "AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET, or az login",
    "Hugging Face": "HF_TOKEN, or hf auth login",
}
# A GCS client retries for 15 minutes by default; an unreachable store should say so sooner.
GCS_RETRY_SECONDS = 20
GLOB_CHARACTERS = "*?["
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

# (scheme, authority) -> (filesystem, its path of the authority): one client per bucket
_connections: dict[tuple[str, str], tuple[pafs.FileSystem, str]] = {}


def is_remote(path: str) -> bool:
    """Whether a run path names an object in a store (s3://, gs://, abfs://, hf://, https://)."""
    match = _URL.match(path)
    return match is not None and match.group(1).lower() in {**PYARROW_STORES, **FSSPEC_STORES}


def _split(uri: str) -> tuple[str, str, str]:
    """'s3://bucket/a/b' -> ('s3', 'bucket', 'a/b')."""
    scheme, rest = uri.split("://", 1)
    authority, _, path = rest.partition("/")
    return scheme.lower(), authority, path


def _store(uri: str) -> str:
    scheme = _split(uri)[0]
    return PYARROW_STORES.get(scheme) or FSSPEC_STORES[scheme]


def _has_listing(uri: str) -> bool:
    """HTTP has no listing: an http(s) URL names one file, '?' and all."""
    return _split(uri)[0] not in ("http", "https")


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a URI and the path of the URI inside it (no trailing '/')."""
    scheme, authority, path = _split(uri)
    if not authority and scheme != "hf":
        raise InputError(f"expected {scheme}://BUCKET/PATH", path=uri)
    key = (scheme, authority)
    if key not in _connections:
        _connections[key] = _connect(uri, scheme, f"{scheme}://{authority}")
    fs, root = _connections[key]
    return fs, _join(root, path.strip("/"))


def _join(root: str, path: str) -> str:
    root = root.rstrip("/")
    return f"{root}/{path}" if root and path else root or path


def _connect(uri: str, scheme: str, base: str) -> tuple[pafs.FileSystem, str]:
    if scheme in PYARROW_STORES:
        query = f"?retry_limit_seconds={GCS_RETRY_SECONDS}" if scheme in ("gs", "gcs") else ""
        with store_errors(uri):
            fs, root = pafs.FileSystem.from_uri(base + query)
        if scheme == "s3" and os.environ.get("AWS_MAX_ATTEMPTS"):
            fs = _with_attempts(uri, fs, os.environ["AWS_MAX_ATTEMPTS"])
        return fs, root
    try:
        import fsspec
        if scheme == "hf":
            import huggingface_hub  # noqa: F401  (fsspec's hf:// filesystem)
        else:
            import aiohttp  # noqa: F401  (fsspec's http:// filesystem)
    except ImportError as exc:
        raise InputError(f"reading {scheme}:// paths needs the optional package '{exc.name}': "
                         f"{CLOUD_EXTRA}", path=uri) from None
    with store_errors(uri):
        fs, root = fsspec.core.url_to_fs(base)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), root


def _with_attempts(uri: str, fs: pafs.S3FileSystem, attempts: str) -> pafs.S3FileSystem:
    """The AWS SDKs' standard AWS_MAX_ATTEMPTS, which pyarrow's S3 does not read itself: the
    same filesystem (the options from_uri resolved, as its pickling records them) with that
    many attempts per request instead of 3."""
    if not attempts.strip().isdigit() or int(attempts) < 1:
        raise InputError(f"AWS_MAX_ATTEMPTS is '{attempts}', expected a whole number >= 1",
                         path=uri)
    options = fs.__reduce__()[1][0]
    return pafs.S3FileSystem(**options, retry_strategy=pafs.AwsStandardS3RetryStrategy(
        max_attempts=int(attempts)))


def _uri_of(uri: str, inner: str) -> str:
    """The URI of a path that a listing below `uri` returned."""
    scheme, authority, _ = _split(uri)
    root = _connections[(scheme, authority)][1].rstrip("/")
    rest = inner[len(root):].lstrip("/") if inner.startswith(root) else inner
    return f"{scheme}://{authority}/{rest}"


# ----------------------------------------------------------------------------- errors

REFUSED = "the credentials were refused or are missing"
DENIED = "access denied"
# What a store's reason says, in its own words (AWS error codes, HTTP statuses, curl), and what
# that means for someone running metricdiff. A status is a number of its own, never part of
# an address or port (127.0.0.1:40311).
_STATUS = r"(?<![\d.:]){}(?!\d)"
_REASONS = tuple((re.compile("|".join(needles)), meaning) for needles, meaning in (
    (("NO_SUCH_BUCKET", "NoSuchBucket", "bucket does not exist", "ContainerNotFound"),
     "no such bucket"),
    (("[Cc]redentials", "access token", "InvalidAccessKeyId", "SignatureDoesNotMatch",
      "ExpiredToken", "Unauthorized", _STATUS.format(401)),
     REFUSED),
    (("ACCESS_DENIED", "AccessDenied", "Forbidden", "FORBIDDEN", "AuthorizationFailure",
      _STATUS.format(403)),
     DENIED),
    (("NETWORK_CONNECTION", "curlCode", "[Cc]ould not connect", "Cannot connect",
      "resolve host", "timed out", "[Tt]imeout", "Connection refused", "ConnectionError",
      "Failed to connect", "offline"),
     "cannot reach the store"),
))


# A store's reason is quoted up to this many characters (GCS's can run to a thousand)
MAX_REASON = 300


def _reason(store: str, exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > MAX_REASON:
        text = text[:MAX_REASON - 3].rstrip() + "..."
    for pattern, meaning in _REASONS:
        if pattern.search(text):
            if meaning in (REFUSED, DENIED) and store in CREDENTIALS:
                return f"{meaning} ({text}); credentials come from {CREDENTIALS[store]}"
            return f"{meaning} ({text})"
    return text


def error(uri: str, exc: BaseException) -> InputError:
    """One line: the path, the store, and what the store said."""
    if isinstance(exc, FileNotFoundError):
        return InputError(f"no such file or folder in {_store(uri)}", path=uri)
    return InputError(f"{_store(uri)}: {_reason(_store(uri), exc)}", path=uri)


# What a store's client raises: pyarrow's errors, OSError (HTTP and network errors among them),
# and fsspec's implementations' own exceptions, which derive from Exception only.
STORE_ERRORS = (pa.ArrowException, OSError, ValueError, RuntimeError)


@contextmanager
def store_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except InputError:
        raise
    except STORE_ERRORS as exc:
        raise error(uri, exc) from None
    except Exception as exc:  # aiohttp's and huggingface_hub's errors (ClientError, HfHubHTTPError)
        if type(exc).__module__.split(".")[0] in ("aiohttp", "huggingface_hub", "requests",
                                                  "httpx", "fsspec"):
            raise error(uri, exc) from None
        raise


def is_store_error(exc: BaseException) -> bool:
    """Whether an error met while decoding a remote file came from the store, not the file."""
    return any(pattern.search(str(exc)) for pattern, _ in _REASONS)


# ----------------------------------------------------------------------------- operations

def info(uri: str) -> pafs.FileInfo:
    fs, path = resolve(uri)
    with store_errors(uri):
        return fs.get_file_info(path)


def stamp(uri: str) -> tuple[int | str, ...]:
    """What identifies an object's content: its size and ETag where the store gives one (S3:
    a new ETag for every write, unlike a modification time of one-second resolution), else
    its size and modification time (-1 if the store gives none)."""
    fs, path = resolve(uri)
    with store_errors(uri):
        found = fs.get_file_info(path) if isinstance(fs, pafs.PyFileSystem) else None
        if found is None:  # one request either way: the open is a HEAD that returns the ETag
            with fs.open_input_file(path) as handle:
                etag = handle.metadata().get("ETag")  # keys str, values bytes
                if etag:
                    return (handle.size(), etag.decode("utf-8", "replace"))
            found = fs.get_file_info(path)
    if found.type != pafs.FileType.File:
        raise InputError(f"no such file in {_store(uri)}", path=uri)
    return (found.size, found.mtime_ns if found.mtime_ns is not None else -1)


def open_input(uri: str) -> pa.NativeFile:
    """A random-access file: reads fetch byte ranges, not the whole object."""
    fs, path = resolve(uri)
    with store_errors(uri):
        return fs.open_input_file(path)


def find_files(uri: str) -> list[str]:
    """The shard files of a run in a store, by the rules of local runs: an object that exists
    is taken as it is; a prefix is a folder whose *.parquet objects below it are the shards
    (names starting with '.' or '_' skipped); otherwise a glob; in sorted order."""
    found = info(uri)
    if found.type == pafs.FileType.File:
        return [uri]
    if found.type == pafs.FileType.Directory and _has_listing(uri):
        fs, path = resolve(uri)
        files = sorted(_uri_of(uri, entry.path) for entry in _list(uri, fs, path, True)
                       if entry.type == pafs.FileType.File
                       and entry.path.endswith(".parquet") and _shown(entry.path[len(path):]))
        if not files:
            raise InputError("folder holds no *.parquet file", path=uri)
        return files
    if _has_listing(uri) and any(ch in uri for ch in GLOB_CHARACTERS):
        files = _glob(uri, pafs.FileType.File)
        if not files:
            raise _missing_bucket(uri) or InputError("no file matches this pattern", path=uri)
        return files
    raise _not_found(uri)


def find_folders(pattern: str) -> list[str]:
    """The prefixes ('folders') a pattern ending in '/' matches, each with a trailing '/'."""
    if not _has_listing(pattern):
        raise InputError("an http(s):// URL names one file: HTTP has no listing to match a "
                         "pattern against", path=pattern)
    folders = _glob(pattern.rstrip("/"), pafs.FileType.Directory)
    missing = None if folders else _missing_bucket(pattern)
    if missing is not None:
        raise missing
    return [f"{folder}/" for folder in folders]


def _shown(relative: str) -> bool:
    """No part of the path below the folder starts with '.' or '_' (temporary, bookkeeping)."""
    return not any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _list(uri: str, fs: pafs.FileSystem, path: str, recursive: bool) -> list[pafs.FileInfo]:
    with store_errors(uri):
        return fs.get_file_info(pafs.FileSelector(path, recursive=recursive,
                                                  allow_not_found=True))


def _glob(pattern: str, wanted: pafs.FileType) -> list[str]:
    """What a glob matches, segment by segment like the shell's (a '*' stays within one
    segment, '**' spans any number); the listing starts at the last segment without glob
    characters, and goes below it only as deep as the pattern needs."""
    scheme, authority, path = _split(pattern)
    if any(ch in authority for ch in GLOB_CHARACTERS):
        raise InputError("a pattern cannot match bucket names; name the bucket", path=pattern)
    parts = path.strip("/").split("/")
    fixed = next(i for i, part in enumerate(parts) if any(ch in part for ch in GLOB_CHARACTERS))
    fs, base = resolve(f"{scheme}://{authority}/{'/'.join(parts[:fixed])}")
    wanted_parts = parts[fixed:]
    recursive = len(wanted_parts) > 1 or "**" in wanted_parts
    matches = []
    for entry in _list(pattern, fs, base, recursive):
        relative = entry.path[len(base):].strip("/").split("/")
        if entry.type == wanted and _match(wanted_parts, relative):
            matches.append(_uri_of(pattern, entry.path))
    return sorted(matches)


def _match(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":  # any number of levels, none of them hidden (as glob's)
        return any(_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1)
                   if not any(part.startswith(".") for part in parts[:i]))
    if not parts or (parts[0].startswith(".") and not pattern[0].startswith(".")):
        return False  # like glob: a wildcard does not match a hidden name
    return fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(pattern[1:], parts[1:])


def _not_found(uri: str) -> InputError:
    """No such object: say whether the bucket itself is missing, or, over HTTP, what the
    server said (fsspec reports every failure as a missing file)."""
    scheme, authority, path = _split(uri)
    if scheme in ("http", "https"):
        fs, inner = resolve(uri)
        try:
            fs.handler.fs.info(inner)
        except FileNotFoundError as exc:
            cause = exc.__cause__
            if cause is not None and getattr(cause, "status", None) != 404:
                return error(uri, cause)
        except Exception as exc:  # the store's reason, whatever its type
            return error(uri, exc)
    return _missing_bucket(uri) or InputError(f"no such file or folder in {_store(uri)}",
                                              path=uri)


def _missing_bucket(uri: str) -> InputError | None:
    """The error to give when what a path names is not there because its bucket is not."""
    scheme, authority, path = _split(uri)
    if scheme in ("s3", "gs", "gcs") and path.strip("/"):
        if info(f"{scheme}://{authority}").type == pafs.FileType.NotFound:
            return InputError(f"no such bucket '{authority}' in {_store(uri)}", path=uri)
    return None
