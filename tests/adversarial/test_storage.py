"""Adversarial object-storage paths, against moto's S3 server on the loopback interface: an
endpoint nobody listens on, buckets and keys that are not there, URLs that look like options
or names, prefixes that hold no run. Each case: the right objects are read, or one clear line
and exit 2. Skipped where moto is not installed (the tests without a server still run)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from conftest import random_logits, write_run
from metricdiff import storage
from s3server import (BUCKET, client, free_port, one_line_error, run_cli, set_store_env, start_moto,
                      stop, store_pointed_at)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A bucket with a run below a key holding '=' (hive-style), one with glob characters in
    its key, and a prefix holding only bookkeeping files."""
    process, endpoint = start_moto()
    folder = tmp_path_factory.mktemp("adversarial-s3")
    logits, labels = random_logits(120, 3, seed=5)
    write_run(folder / "run.parquet", labels, logits=logits, ids=np.arange(120))
    s3 = client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for key in ("part=1/run.parquet", "odd[1]/run*.parquet", "plain/run.parquet"):
        s3.upload_file(str(folder / "run.parquet"), BUCKET, key)
    s3.put_object(Bucket=BUCKET, Key="empty/_SUCCESS", Body=b"")
    s3.put_object(Bucket=BUCKET, Key="empty/.hidden.parquet", Body=b"PAR1")
    yield endpoint
    stop(process)


@pytest.fixture
def s3(monkeypatch, server):
    yield from store_pointed_at(monkeypatch, server)


def test_an_unreachable_endpoint_is_one_line_within_seconds(monkeypatch):
    set_store_env(monkeypatch, f"http://127.0.0.1:{free_port()}")  # a closed loopback port
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the AWS SDKs' own setting: no retries
    start = time.monotonic()
    for args in (("report", f"s3://{BUCKET}/run.parquet"),
                 ("report", f"s3://{BUCKET}/runs/shard-*.parquet"),
                 ("compare", f"a=s3://{BUCKET}/a/seed*/", f"b=s3://{BUCKET}/b/seed*/")):
        one_line_error(run_cli(*args), "S3: cannot reach the store")
    assert time.monotonic() - start < 10
    storage._connections.clear()


def test_an_endpoint_that_never_answers_times_out_in_one_line(monkeypatch):
    import socket
    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        set_store_env(monkeypatch, f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        start = time.monotonic()
        one_line_error(run_cli("report", f"s3://{BUCKET}/run.parquet"),
                       "S3: cannot reach the store", "Timeout")
        assert time.monotonic() - start < 30
    storage._connections.clear()


@pytest.mark.parametrize("command", ["report", "compare"])
def test_no_such_bucket_in_either_command(s3, command):
    args = [f"s3://no-such-bucket-{command}/val.parquet"]
    if command == "compare":
        args = [f"s3://{BUCKET}/plain/run.parquet", *args]
    one_line_error(run_cli(command, *args), f"s3://no-such-bucket-{command}/val.parquet",
                   f"no such bucket 'no-such-bucket-{command}'")


def test_a_glob_in_a_missing_bucket_and_a_glob_over_bucket_names(s3):
    one_line_error(run_cli("report", "s3://no-such-bucket/run-*.parquet"), "no such bucket")
    one_line_error(run_cli("report", "s3://run*/val.parquet"), "cannot match bucket names")


def test_a_bad_aws_max_attempts(s3, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "few")
    one_line_error(run_cli("report", f"s3://{BUCKET}/plain/run.parquet"),
                   "AWS_MAX_ATTEMPTS is 'few', expected a whole number >= 1")


def test_a_url_without_a_bucket(s3):
    one_line_error(run_cli("report", "s3:///val.parquet"), "expected s3://BUCKET/PATH")


def test_an_equals_sign_in_a_url_is_not_a_run_name(s3):
    result = run_cli("compare", f"s3://{BUCKET}/part=1/run.parquet",
                     f"pr=s3://{BUCKET}/plain/run.parquet", "-f", "json")
    assert result.exit_code == 0, result.output
    names = [run["name"] for run in json.loads(result.stdout)["runs"]]
    assert names == ["run", "pr"]


def test_an_existing_key_with_glob_characters_is_that_object(s3):
    result = run_cli("report", f"s3://{BUCKET}/odd[1]/run*.parquet", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run"]["files"] == [f"s3://{BUCKET}/odd[1]/run*.parquet"]


def test_a_prefix_of_bookkeeping_files_only(s3):
    one_line_error(run_cli("report", f"s3://{BUCKET}/empty/"), "folder holds no *.parquet file")


def test_a_key_that_is_a_prefix_of_another_key_is_not_a_match(s3):
    one_line_error(run_cli("report", f"s3://{BUCKET}/plain/run"),
                   "no such file or folder in S3")
