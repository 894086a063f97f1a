"""The S3 backend of the storage layer: ``s3://bucket/prefix`` locations on AWS S3 or any S3-compatible store.

``pipelines.core.storage`` imports this module the first time it meets an ``s3://`` location and registers an
:class:`S3Backend` for the ``s3`` scheme. Stages never call it directly.

Writes are atomic: an object appears only when its upload completes. A small object is one PUT; a big
one (``multipart_threshold``, 64 MiB by default) is a multipart upload, which S3 publishes only on
``CompleteMultipartUpload``, so a writer killed mid-upload leaves nothing visible (only an incomplete
upload, which a bucket lifecycle rule ``AbortIncompleteMultipartUpload`` cleans). Content is the same
bytes the local backend would write, so a lake on S3 is byte-identical to one on disk.

Configuration, all from the environment (never from params.yaml or the repo):

- endpoint: ``LOOPLINE_S3_ENDPOINT_URL``, else the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``;
  unset means AWS itself. A custom endpoint (MinIO, Ceph, moto...) uses path-style addressing and
  sends checksums only where S3 requires them (many S3-compatible servers reject the newer ones).
- credentials: the standard AWS chain only: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
  (/``AWS_SESSION_TOKEN``), ``AWS_PROFILE`` and the shared config files, SSO, or the instance / task
  role. Under Airflow, the task that runs a stage exports the AWS connection ``$LOOPLINE_AWS_CONN_ID``
  (default ``aws_default``; ``plugins/loopline_dvc.py``) into that stage's environment only: login ->
  ``AWS_ACCESS_KEY_ID``, password -> ``AWS_SECRET_ACCESS_KEY``, extras ``aws_session_token``,
  ``region_name`` and ``endpoint_url`` -> ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``,
  ``LOOPLINE_S3_ENDPOINT_URL``.
- retries: botocore's ``adaptive`` mode (exponential back-off with jitter, plus client-side rate limiting
  when S3 throttles); ``AWS_MAX_ATTEMPTS`` (standard; default 8 attempts in all) bounds it. An unreachable
  endpoint is retried for at most ``LOOPLINE_S3_RETRY_SECONDS`` (default 12) from the request's start,
  then the request fails with one line naming the endpoint; an attempt that hangs ends at
  ``LOOPLINE_S3_CONNECT_TIMEOUT`` / ``LOOPLINE_S3_READ_TIMEOUT`` (seconds; default 5 / 60).

Every failure is raised as a built-in ``OSError`` subclass whose message names the bucket and key, the
endpoint, and the fix: ``FileNotFoundError`` (no such key or bucket), ``PermissionError`` (access denied,
no credentials), ``ConnectionError`` (endpoint unreachable after the retries), ``OSError`` otherwise.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import io
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions as bex
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from pipelines.core.storage_backend import TMP_PREFIX

__all__ = ["S3Backend", "endpoint_from_env", "split_uri"]

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_RETRY_SECONDS = (
    12.0  # retrying an unreachable endpoint, from the request's start: the error line within 15 s
)
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_MULTIPART_THRESHOLD = 64 * 1024 * 1024
DEFAULT_MULTIPART_CHUNKSIZE = 16 * 1024 * 1024
_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_DENIED = {
    "AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId",
    "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
}  # fmt: skip
_UNREACHABLE = (
    bex.EndpointConnectionError,
    bex.ConnectTimeoutError,
    bex.ReadTimeoutError,
    bex.ConnectionClosedError,
)


def split_uri(loc: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``; the key may be empty (the bucket root)."""
    if not loc.startswith("s3://"):
        raise ValueError(f"location {loc!r}: not an s3:// URI")
    bucket, _, key = loc[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"location {loc!r}: no bucket name; expected s3://bucket/prefix")
    return bucket, key.strip("/")


def endpoint_from_env() -> str | None:
    """The S3 endpoint URL from the environment, or None for AWS itself."""
    for var in ("LOOPLINE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(var, "").strip()
        if value:
            return value
    return None


def _env_number(var: str, default: float, *, integer: bool = False) -> Any:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ValueError(f"environment {var}={raw!r}: expected a number") from None
    if value <= 0:
        raise ValueError(f"environment {var}={raw!r}: must be > 0")
    return value


_GAVE_UP = threading.local()  # (attempts, seconds) of this thread's last request to an unreachable endpoint


def _stamp_start(context: dict[str, Any] | None = None, **_: Any) -> None:
    """``before-call`` hook: when the request started (its retries share the context)."""
    if context is not None:
        context["loopline_started"] = time.monotonic()


def _retry_budget(max_attempts: int, budget: float, connect_timeout: float) -> Any:
    """A ``needs-retry`` hook, registered before botocore's own, that bounds retries against an unreachable
    endpoint by time: back-off 0.5, 1, 2, 4 s (jittered, at most 5 s) while the request is younger than
    ``budget`` seconds (a next attempt that may hang for the connect timeout must end within it); past it,
    the connection error is raised at once. Other failures (throttling, 5xx)
    are left to botocore's adaptive retries."""

    def decide(
        attempts: int = 0,
        caught_exception: Exception | None = None,
        request_dict: dict[str, Any] | None = None,
        **_: Any,
    ) -> float | None:
        if not isinstance(caught_exception, _UNREACHABLE):
            return None
        started = ((request_dict or {}).get("context") or {}).get("loopline_started")
        elapsed = 0.0 if started is None else time.monotonic() - started
        _GAVE_UP.record = (attempts, elapsed)
        if attempts >= max_attempts:
            return None  # botocore stops too
        pause = min(0.5 * 2 ** (attempts - 1), 5.0) * random.uniform(0.5, 1.0)
        # a host that swallows packets costs a connect timeout per attempt: the next one must end in time
        hang = connect_timeout if isinstance(caught_exception, bex.ConnectTimeoutError) else 0.0
        if elapsed + pause + hang >= budget:
            raise caught_exception
        return pause

    return decide


def _retry_logger(endpoint: str | None, max_attempts: int) -> Any:
    """A botocore ``needs-retry`` hook that logs each failed attempt that will be retried (never decides)."""

    def log_retry(
        attempts: int = 0, caught_exception: Exception | None = None, response: Any = None, **kwargs: Any
    ) -> None:
        if attempts >= max_attempts:
            return None
        op = getattr(kwargs.get("operation"), "name", "request")
        if isinstance(caught_exception, _UNREACHABLE):
            why = str(caught_exception)
        elif (
            caught_exception is None
            and response is not None
            and response[0].status_code in (429, 500, 502, 503, 504)
        ):
            why = f"HTTP {response[0].status_code}"
        else:
            return None
        log.warning(
            "S3 %s to %s: attempt %d/%d failed (%s); retrying",
            op,
            endpoint or "AWS",
            attempts,
            max_attempts,
            why,
        )
        return None

    return log_retry


class S3Backend:
    """``storage_backend.Backend`` over S3 through boto3. Thread-safe; one client per endpoint, made lazily.

    Arguments left as None are read from the environment at use time (see the module docstring), so a
    process that changes ``LOOPLINE_S3_ENDPOINT_URL`` gets a client for the new endpoint.
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        max_attempts: int | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
    ) -> None:
        if multipart_threshold < 5 * 1024 * 1024 or multipart_chunksize < 5 * 1024 * 1024:
            raise ValueError(
                f"multipart_threshold={multipart_threshold}, multipart_chunksize={multipart_chunksize}: "
                "S3 parts must be at least 5 MiB"
            )
        self._endpoint_url = endpoint_url
        self._max_attempts = max_attempts
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize
        )
        self.multipart_threshold = multipart_threshold
        self._clients: dict[tuple[str | None, int, float, float], Any] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ client and errors

    def _settings(self) -> tuple[str | None, int, float, float]:
        return (
            self._endpoint_url or endpoint_from_env(),
            self._max_attempts or _env_number("AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, integer=True),
            self._connect_timeout or _env_number("LOOPLINE_S3_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT),
            self._read_timeout or _env_number("LOOPLINE_S3_READ_TIMEOUT", DEFAULT_READ_TIMEOUT),
        )

    def client(self) -> Any:
        """The boto3 S3 client for the current settings (created once per endpoint and settings)."""
        settings = self._settings()
        with self._lock:
            found = self._clients.get(settings)
            if found is None:
                endpoint, attempts, connect, read = settings
                extra: dict[str, Any] = {}
                if endpoint:
                    # S3-compatible servers: path-style URLs, and only the checksums S3 requires.
                    extra = {
                        "s3": {"addressing_style": "path"},
                        "request_checksum_calculation": "when_required",
                        "response_checksum_validation": "when_required",
                    }
                cfg = Config(
                    retries={
                        "mode": "adaptive",
                        "total_max_attempts": attempts,
                    },  # AWS_MAX_ATTEMPTS: all attempts
                    connect_timeout=connect,
                    read_timeout=read,
                    max_pool_connections=32,
                    **extra,
                )
                found = boto3.session.Session().client("s3", endpoint_url=endpoint, config=cfg)
                budget = _env_number("LOOPLINE_S3_RETRY_SECONDS", DEFAULT_RETRY_SECONDS)
                found.meta.events.register("before-call.s3", _stamp_start)
                found.meta.events.register_first("needs-retry.s3", _retry_budget(attempts, budget, connect))
                found.meta.events.register("needs-retry.s3", _retry_logger(endpoint, attempts))
                self._clients[settings] = found
            return found

    def _error(self, err: Exception, op: str, bucket: str, key: str) -> OSError:
        """A built-in OSError naming the object, the endpoint and the fix, for a boto error."""
        client = self.client()
        endpoint = client.meta.endpoint_url
        where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
        attempts = self._settings()[1]
        if isinstance(err, bex.ClientError):
            code = str(err.response.get("Error", {}).get("Code", ""))
            msg = err.response.get("Error", {}).get("Message", "") or str(err)
            if code == "NoSuchBucket":
                return FileNotFoundError(
                    f"{op} {where}: bucket {bucket!r} does not exist at {endpoint}; create it "
                    f"(aws s3 mb s3://{bucket} --endpoint-url {endpoint}) or fix the location"
                )
            if code in _NOT_FOUND:
                return FileNotFoundError(f"{op} {where}: no such object at {endpoint}")
            if code in _DENIED:
                return PermissionError(
                    f"{op} {where}: access denied ({code}: {msg}) at {endpoint}; check the credentials "
                    "in the AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, instance role) "
                    f"and that their policy allows this on arn:aws:s3:::{bucket}/{key or '*'}"
                )
            return OSError(f"{op} {where}: S3 error {code or '?'} at {endpoint}: {msg}")
        if isinstance(err, bex.NoCredentialsError | bex.PartialCredentialsError):
            return PermissionError(
                f"{op} {where}: no AWS credentials found ({err}); set AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an instance role "
                "(Loopline never reads credentials from params.yaml)"
            )
        if isinstance(err, _UNREACHABLE):
            tried, seconds = getattr(_GAVE_UP, "record", (attempts, 0.0))
            return ConnectionError(
                f"{op} {where}: S3 endpoint {endpoint} unreachable after {tried} attempts in {seconds:.1f} s "
                f"({err}); check that the server is up and reachable, and LOOPLINE_S3_ENDPOINT_URL / "
                "AWS_ENDPOINT_URL (LOOPLINE_S3_RETRY_SECONDS and AWS_MAX_ATTEMPTS bound the retries)"
            )
        return OSError(f"{op} {where}: S3 request to {endpoint} failed: {err}")

    def _call(self, op: str, bucket: str, key: str, fn: Any, /, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (bex.BotoCoreError, bex.ClientError) as err:
            raise self._error(err, op, bucket, key) from err

    # ------------------------------------------------------------------ Backend protocol

    def read_bytes(self, loc: str) -> bytes:
        bucket, key = split_uri(loc)
        client = self.client()
        resp = self._call("read", bucket, key, client.get_object, Bucket=bucket, Key=key)
        try:
            return bytes(resp["Body"].read())
        except (bex.BotoCoreError, bex.ClientError) as err:
            raise self._error(err, "read", bucket, key) from err

    def write_bytes(self, loc: str, data: bytes) -> None:
        bucket, key = split_uri(loc)
        if not key or key.endswith("/"):
            raise ValueError(f"location {loc!r}: an object needs a key, e.g. s3://{bucket}/path/file")
        client = self.client()
        if len(data) < self.multipart_threshold:
            self._call("write", bucket, key, client.put_object, Bucket=bucket, Key=key, Body=data)
            return
        from boto3.exceptions import S3UploadFailedError

        try:
            # Multipart: parts upload in parallel; the object appears only on completion.
            client.upload_fileobj(io.BytesIO(data), bucket, key, Config=self._transfer)
        except (bex.BotoCoreError, bex.ClientError) as err:
            raise self._error(err, "write", bucket, key) from err
        except S3UploadFailedError as err:
            cause = err.__cause__ or err.__context__
            if isinstance(cause, bex.BotoCoreError | bex.ClientError):
                raise self._error(cause, "write", bucket, key) from err
            raise OSError(f"write s3://{bucket}/{key}: multipart upload failed: {err}") from err

    def exists(self, loc: str) -> bool:
        """True for an object, or for a prefix holding objects (as a local folder exists)."""
        bucket, key = split_uri(loc)
        client = self.client()
        if key:
            try:
                client.head_object(Bucket=bucket, Key=key)
                return True
            except bex.ClientError as err:
                code = str(err.response.get("Error", {}).get("Code", ""))
                if code not in _NOT_FOUND:
                    raise self._error(err, "exists", bucket, key) from err
            except bex.BotoCoreError as err:
                raise self._error(err, "exists", bucket, key) from err
        prefix = f"{key}/" if key else ""
        resp = self._call(
            "exists", bucket, key, client.list_objects_v2, Bucket=bucket, Prefix=prefix, MaxKeys=1
        )
        return int(resp.get("KeyCount", 0)) > 0

    def list_files(self, loc: str, pattern: str = "*", recursive: bool = False) -> list[str]:
        """Objects under the prefix whose base name matches ``pattern``; hidden temporaries skipped.

        Non-recursive lists one level (delimiter ``/``), as a local folder listing does. Paginated.
        """
        bucket, key = split_uri(loc)
        out = []
        for obj_key in self._keys(bucket, key, recursive=recursive):
            name = obj_key.rsplit("/", 1)[-1]
            if name and not name.startswith(TMP_PREFIX) and fnmatch.fnmatch(name, pattern):
                out.append(f"s3://{bucket}/{obj_key}")
        return sorted(out)

    def _keys(self, bucket: str, key: str, *, recursive: bool) -> list[str]:
        """Every object key under ``<key>/`` (one level unless recursive), paginated."""
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": f"{key}/" if key else ""}
        if not recursive:
            kwargs["Delimiter"] = "/"
        keys: list[str] = []
        try:
            for page in self.client().get_paginator("list_objects_v2").paginate(**kwargs):
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        except (bex.BotoCoreError, bex.ClientError) as err:
            raise self._error(err, "list", bucket, key) from err
        return keys

    def delete(self, loc: str) -> None:
        """Delete the object and everything under ``<key>/`` (as a local folder is removed)."""
        bucket, key = split_uri(loc)
        if not key:
            raise ValueError(f"location {loc!r}: refusing to delete a whole bucket; name a prefix")
        client = self.client()
        self._call("delete", bucket, key, client.delete_object, Bucket=bucket, Key=key)
        keys = self._keys(bucket, key, recursive=True)  # hidden ones too: nothing may stay behind
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            resp = self._call(
                "delete",
                bucket,
                key,
                client.delete_objects,
                Bucket=bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
            if resp.get("Errors"):
                first = resp["Errors"][0]
                raise OSError(
                    f"delete s3://{bucket}/{first.get('Key')}: {first.get('Code')}: {first.get('Message')} "
                    f"({len(resp['Errors'])} object(s) not deleted under s3://{bucket}/{key})"
                )

    def stat(self, loc: str) -> tuple[int, int]:
        """(size in bytes, last-modified time in ns) of an object, from one HEAD request."""
        bucket, key = split_uri(loc)
        client = self.client()
        head = self._call("stat", bucket, key, client.head_object, Bucket=bucket, Key=key)
        modified: dt.datetime = head["LastModified"]
        return int(head["ContentLength"]), int(modified.timestamp()) * 1_000_000_000

    def create_bytes(self, loc: str, data: bytes) -> bool:
        """One conditional PUT (``If-None-Match: *``): True if it created the object, False if the key existed.

        S3 answers 412 PreconditionFailed when the key exists, and 409 ConditionalRequestConflict while another
        conditional write of the same key is in flight: then wait and ask again, since that one may fail.
        """
        bucket, key = split_uri(loc)
        if not key or key.endswith("/"):
            raise ValueError(f"location {loc!r}: an object needs a key, e.g. s3://{bucket}/path/file")
        client = self.client()
        for attempt in range(8):
            try:
                client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                return True
            except bex.ClientError as err:
                code = str(err.response.get("Error", {}).get("Code", ""))
                status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
                if code == "PreconditionFailed" or status == 412:
                    return False
                if code == "ConditionalRequestConflict" or status == 409:
                    time.sleep(0.1 * 2**attempt)
                    continue
                raise self._error(err, "create", bucket, key) from err
            except bex.BotoCoreError as err:
                raise self._error(err, "create", bucket, key) from err
        raise OSError(
            f"create s3://{bucket}/{key}: conditional PUT still conflicting after 8 attempts; retry later"
        )

    def local_path(self, loc: str) -> Path | None:
        return None
