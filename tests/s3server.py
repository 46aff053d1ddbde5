"""A real S3-compatible server for tests: moto in server mode, in its own process on the
loopback interface, and the standard AWS environment pointing at it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from metricdiff import storage
from metricdiff.cli import app

BUCKET = "runs"
KEY, SECRET = "metricdiff-test", "metricdiff-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """moto's S3 in its own process on 127.0.0.1 (its logs kept out of the tests' streams);
    the calling test is skipped where moto's server is not installed."""
    pytest.importorskip("moto.server", reason="moto[server] (the dev extra) is not installed")
    pytest.importorskip("flask", reason="moto[server] (the dev extra) is not installed")
    port = free_port()
    env = {**os.environ, **(extra_env or {})}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                str(port)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.skip("moto's server did not start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    pytest.skip("moto's server did not start within 60 s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def client(endpoint: str, key: str = KEY, secret: str = SECRET):
    import boto3  # moto's own dependency
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                        aws_secret_access_key=secret, region_name="us-east-1")


def set_store_env(monkeypatch, endpoint: str, key: str = KEY, secret: str = SECRET) -> None:
    """The standard AWS variables only; no instance metadata look-up (it is not loopback)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    storage._connections.clear()  # a client per endpoint: none kept from another test


def store_pointed_at(monkeypatch, endpoint: str):
    """The body of an `s3` fixture: the environment set for `endpoint`, clients dropped after."""
    set_store_env(monkeypatch, endpoint)
    yield endpoint
    storage._connections.clear()


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line_error(result, *fragments: str) -> str:
    """Exit 2 and one line on stderr holding every fragment; no traceback."""
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in err, err
    return err
