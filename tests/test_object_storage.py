"""Runs in object storage, read from a real S3-compatible server: moto in server mode, started
on the loopback interface for the session. Every number must be the one the same files give
when read from the local disk; every store error must be one line with exit 2.

The tests that need the server are skipped where moto (the dev extra's `moto[server]`) is
not installed; the others (schemes, optional packages, Hugging Face offline) still run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import to_rounding, random_logits, write_run
from metricdiff import storage
from s3server import (BUCKET, KEY, SECRET, client, free_port, one_line_error, run_cli,
                      set_store_env, start_moto, stop, store_pointed_at)

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_runs"


@pytest.fixture(scope="session")
def local_runs(tmp_path_factory) -> Path:
    """The runs, on disk: sample files, a run of shards with bookkeeping files beside them, and
    the multi-seed runs."""
    root = tmp_path_factory.mktemp("local") / "data"
    root.mkdir()
    for name in ("digits_gnb", "digits_logreg"):
        shutil.copy(SAMPLES / f"{name}.parquet", root / f"{name}.parquet")
    logits, labels = random_logits(900, 6, seed=3)
    write_run(root / "sharded", labels, logits=logits, ids=np.arange(900), shards=3,
              row_group_size=100)
    (root / "sharded" / "_SUCCESS").write_text("")
    (root / "sharded" / ".part-9.parquet.tmp.parquet").write_bytes(b"half written")
    shutil.copytree(SAMPLES / "seeds", root / "seeds")
    (root / "series").mkdir()  # three checkpoints, named so that only natural order is right
    for epoch, name in ((1, "epoch1"), (2, "epoch2"), (10, "epoch10")):
        shutil.copy(SAMPLES / "series" / "wide" / f"epoch{epoch:02d}.parquet",
                    root / "series" / f"{name}.parquet")
    return root


@pytest.fixture(scope="session")
def s3_server(local_runs):
    """The server, with every local run uploaded below s3://runs/data/."""
    process, endpoint = start_moto()
    s3 = client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for file in sorted(local_runs.rglob("*")):
        if file.is_file():
            s3.upload_file(str(file), BUCKET, f"data/{file.relative_to(local_runs)}",
                           ExtraArgs={"ACL": "public-read"})  # public: also read over HTTP
    yield endpoint
    stop(process)


@pytest.fixture
def s3(monkeypatch, s3_server):
    yield from store_pointed_at(monkeypatch, s3_server)


def as_json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def same_numbers(remote: dict, local: dict, local_runs: Path) -> None:
    """Equal documents once the remote paths are written as the local ones."""
    text = json.dumps(remote).replace(f"s3://{BUCKET}/data", str(local_runs))
    assert json.loads(text) == local


# ----------------------------------------------------------------------------- same numbers

def test_report_of_one_file_equals_the_local_file(s3, local_runs):
    remote = as_json(run_cli("report", f"s3://{BUCKET}/data/digits_gnb.parquet", "-f", "json"))
    local = as_json(run_cli("report", str(local_runs / "digits_gnb.parquet"), "-f", "json"))
    same_numbers(remote, local, local_runs)


def test_compare_of_two_files_equals_the_local_files(s3, local_runs):
    remote = as_json(run_cli("compare", f"s3://{BUCKET}/data/digits_logreg.parquet",
                             f"s3://{BUCKET}/data/digits_gnb.parquet", "-f", "json"))
    local = as_json(run_cli("compare", str(local_runs / "digits_logreg.parquet"),
                            str(local_runs / "digits_gnb.parquet"), "-f", "json"))
    same_numbers(remote, local, local_runs)


@pytest.mark.parametrize("suffix", ["/", ""])
def test_a_prefix_is_a_folder_of_shards(s3, local_runs, suffix):
    remote = as_json(run_cli("report", f"s3://{BUCKET}/data/sharded{suffix}", "-f", "json"))
    local = as_json(run_cli("report", str(local_runs / "sharded") + suffix, "-f", "json"))
    # the three parts, without _SUCCESS or the hidden half-written file
    assert remote["run"]["files"] == [f"s3://{BUCKET}/data/sharded/part-{i:03d}.parquet"
                                      for i in range(3)]
    same_numbers(remote, local, local_runs)


def test_a_glob_of_shards(s3, local_runs):
    remote = as_json(run_cli("report", f"s3://{BUCKET}/data/sharded/part-00[02].parquet",
                             "-f", "json"))
    local = as_json(run_cli("report", str(local_runs / "sharded" / "part-00[02].parquet"),
                            "-f", "json"))
    assert remote["run"]["n"] == 600
    same_numbers(remote, local, local_runs)


def test_a_glob_star_stays_within_one_level_and_double_star_spans_levels(s3):
    from metricdiff.io import find_files
    assert find_files(f"s3://{BUCKET}/data/*.parquet") == [
        f"s3://{BUCKET}/data/digits_gnb.parquet", f"s3://{BUCKET}/data/digits_logreg.parquet"]
    nested = find_files(f"s3://{BUCKET}/data/seeds/base/**/val.parquet")
    assert nested == [f"s3://{BUCKET}/data/seeds/base/seed{i}/val.parquet" for i in range(5)]
    assert find_files(f"s3://{BUCKET}/data/seeds/*/seed?/val.parquet")[5:6] == [
        f"s3://{BUCKET}/data/seeds/wide/seed0/val.parquet"]


def test_groups_of_seeds_from_run_folder_patterns(s3, local_runs):
    remote = as_json(run_cli("compare", f"base=s3://{BUCKET}/data/seeds/base/seed*/",
                             f"wide=s3://{BUCKET}/data/seeds/wide/seed*/", "-f", "json",
                             "--resamples", "200"))
    local = as_json(run_cli("compare", f"base={local_runs}/seeds/base/seed*/",
                            f"wide={local_runs}/seeds/wide/seed*/", "-f", "json",
                            "--resamples", "200"))
    assert [run["name"] for run in remote["runs"]][:2] == ["base/seed0", "base/seed1"]
    same_numbers(remote, local, local_runs)


def test_a_series_of_checkpoints_from_a_glob(s3, local_runs):
    remote = as_json(run_cli("series", f"s3://{BUCKET}/data/series/epoch*.parquet", "-f",
                             "json"))
    local = as_json(run_cli("series", f"{local_runs}/series/epoch*.parquet", "-f", "json"))
    checkpoints = remote["series"][0]["checkpoints"]
    assert [c["name"] for c in checkpoints] == ["epoch1", "epoch2", "epoch10"]
    same_numbers(remote, local, local_runs)


def test_markdown_with_fail_on_as_in_ci(s3, local_runs):
    remote = run_cli("compare", f"main=s3://{BUCKET}/data/digits_logreg.parquet",
                     f"pr=s3://{BUCKET}/data/digits_gnb.parquet", "--format", "markdown",
                     "--fail-on", "worse")
    local = run_cli("compare", f"main={local_runs}/digits_logreg.parquet",
                    f"pr={local_runs}/digits_gnb.parquet", "--format", "markdown",
                    "--fail-on", "worse")
    assert remote.exit_code == local.exit_code == 1  # naive Bayes is worse than the logistic
    assert remote.stdout.replace(f"s3://{BUCKET}/data", str(local_runs)) == local.stdout


def test_library_reads_object_storage_too(s3, local_runs):
    import metricdiff
    remote = metricdiff.report(f"s3://{BUCKET}/data/digits_gnb.parquet")
    local = metricdiff.report(str(local_runs / "digits_gnb.parquet"))
    assert remote.metrics == local.metrics


class CountingReader(io.RawIOBase):
    """A file that counts the bytes read through it."""

    def __init__(self, inner):
        self.inner, self.read_bytes = inner, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        return self.inner.seek(offset, whence)

    def tell(self):
        return self.inner.tell()

    def readinto(self, buffer):
        data = self.inner.read(len(buffer))
        buffer[:len(data)] = data
        self.read_bytes += len(data)
        return len(data)


def test_reading_streams_row_groups_instead_of_downloading(s3, tmp_path, monkeypatch):
    """Only the footer and the projected columns' chunks are fetched: a run whose large
    metadata column is not read transfers a small part of the object."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from metricdiff.io import inspect_run, iter_batches
    logits, labels = random_logits(2000, 4, seed=1)
    rng = np.random.default_rng(0)
    table = pa.table({"label": labels, "logits": pa.FixedSizeListArray.from_arrays(
        pa.array(logits.ravel()), 4), "blob": [rng.bytes(2000) for _ in range(2000)]})
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=250, compression="none")
    client(s3).upload_file(str(tmp_path / "big.parquet"), BUCKET, "streaming/big.parquet")
    uri = f"s3://{BUCKET}/streaming/big.parquet"
    opened: list[CountingReader] = []
    real_open = storage.open_input

    def counting_open(path):
        opened.append(CountingReader(real_open(path)))
        return opened[-1]

    monkeypatch.setattr(storage, "open_input", counting_open)
    layout = inspect_run(uri)
    assert sum(len(batch) for batch in iter_batches(layout)) == 2000
    size = (tmp_path / "big.parquet").stat().st_size
    read = sum(reader.read_bytes for reader in opened)
    assert len(opened) == 2  # the footer check, then the stream
    assert 0 < read < size / 5, (read, size)


def test_an_object_changed_after_its_footer_was_checked_is_refused(s3, local_runs):
    from metricdiff.io import inspect_run, iter_batches
    uri = f"s3://{BUCKET}/data/changing.parquet"
    s3_client = client(s3)
    s3_client.upload_file(str(local_runs / "digits_gnb.parquet"), BUCKET, "data/changing.parquet")
    layout = inspect_run(uri)
    s3_client.upload_file(str(local_runs / "digits_logreg.parquet"), BUCKET,
                          "data/changing.parquet")
    from metricdiff.errors import InputError
    with pytest.raises(InputError, match="changed after its footer was checked"):
        list(iter_batches(layout))
    s3_client.delete_object(Bucket=BUCKET, Key="data/changing.parquet")


def test_an_object_rewritten_with_the_same_size_within_the_second_is_refused(s3, local_runs):
    """The ETag tells two writes apart where the modification time (whole seconds) cannot."""
    from metricdiff.errors import InputError
    from metricdiff.io import inspect_run, iter_batches
    data = bytearray((local_runs / "digits_gnb.parquet").read_bytes())
    s3_client = client(s3)
    s3_client.put_object(Bucket=BUCKET, Key="data/same-size.parquet", Body=bytes(data))
    layout = inspect_run(f"s3://{BUCKET}/data/same-size.parquet")
    assert isinstance(layout.stamps[0][-1], str)  # the ETag
    data[100] ^= 0xFF  # a byte in the first data page: the same size, the footer intact
    s3_client.put_object(Bucket=BUCKET, Key="data/same-size.parquet", Body=bytes(data))
    with pytest.raises(InputError, match="changed after its footer was checked"):
        list(iter_batches(layout))
    s3_client.delete_object(Bucket=BUCKET, Key="data/same-size.parquet")


def test_http_urls_are_read_through_fsspec(s3, local_runs):
    """An object served over plain HTTP (moto serves path-style GETs): the https:// route."""
    pytest.importorskip("fsspec")
    pytest.importorskip("aiohttp")
    remote = as_json(run_cli("report", f"{s3}/{BUCKET}/data/digits_gnb.parquet", "-f", "json"))
    local = as_json(run_cli("report", str(local_runs / "digits_gnb.parquet"), "-f", "json"))
    text = json.dumps(remote).replace(f"{s3}/{BUCKET}/data", str(local_runs))
    assert json.loads(text) == local


# ----------------------------------------------------------------------------- errors

def test_no_such_bucket(s3):
    one_line_error(run_cli("report", "s3://no-such-bucket/run.parquet"),
                   "s3://no-such-bucket/run.parquet", "no such bucket")


def test_no_such_key(s3):
    one_line_error(run_cli("report", f"s3://{BUCKET}/data/missing.parquet"),
                   f"s3://{BUCKET}/data/missing.parquet", "no such file or folder in S3")


def test_a_prefix_without_parquet_files_and_a_glob_matching_nothing(s3):
    one_line_error(run_cli("report", f"s3://{BUCKET}/data/sharded/part-9*.parquet"),
                   "no file matches this pattern")
    one_line_error(run_cli("compare", f"a=s3://{BUCKET}/data/nothing*/", "b=x.parquet"),
                   "no folder matches this pattern")


def test_an_object_that_is_not_parquet(s3):
    one_line_error(run_cli("report", f"s3://{BUCKET}/data/sharded/_SUCCESS"),
                   "not a readable Parquet file")


def test_unreachable_endpoint_fails_fast_with_one_line(monkeypatch):
    set_store_env(monkeypatch, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    start = time.monotonic()
    err = one_line_error(run_cli("report", f"s3://{BUCKET}/run.parquet"),
                         f"s3://{BUCKET}/run.parquet", "cannot reach the store")
    assert "S3" in err
    assert time.monotonic() - start < 30
    storage._connections.clear()


@pytest.fixture(scope="module")
def auth_server(local_runs):
    """A second server that checks credentials (moto's IAM authentication, enforced after the
    first three requests, which create a user allowed to do everything and its key), holding
    one run."""
    process, endpoint = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    import boto3  # moto's own dependency
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, aws_access_key_id=KEY,
                           aws_secret_access_key=SECRET, region_name="us-east-1")
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        iam.put_user_policy(UserName="reader", PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        s3 = client(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
        s3.create_bucket(Bucket=BUCKET)
        s3.upload_file(str(local_runs / "digits_gnb.parquet"), BUCKET, "run.parquet")
    except Exception as exc:  # a moto that cannot enforce authentication: say so
        stop(process)
        pytest.skip(f"moto cannot check credentials here: {exc}")
    yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    stop(process)


def test_credentials_come_from_the_environment(monkeypatch, auth_server):
    endpoint, key, secret = auth_server
    set_store_env(monkeypatch, endpoint, key=key, secret=secret)
    assert as_json(run_cli("report", f"s3://{BUCKET}/run.parquet", "-f", "json"))["run"]["n"] \
        == 540
    storage._connections.clear()


def test_bad_credentials_are_refused_in_one_line(monkeypatch, auth_server):
    endpoint = auth_server[0]
    set_store_env(monkeypatch, endpoint, key="AKIAWRONGWRONGWRONG1", secret="wrong")
    err = one_line_error(run_cli("report", f"s3://{BUCKET}/run.parquet"),
                         f"s3://{BUCKET}/run.parquet")
    assert "credentials were refused" in err or "access denied" in err, err
    storage._connections.clear()


def test_no_credentials_in_one_line(monkeypatch, auth_server):
    set_store_env(monkeypatch, auth_server[0])
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    err = one_line_error(run_cli("report", f"s3://{BUCKET}/run.parquet"),
                         f"s3://{BUCKET}/run.parquet")
    assert "credentials" in err or "access denied" in err, err
    storage._connections.clear()


# ----------------------------------------------------------------------------- other stores

def test_each_scheme_resolves_to_its_filesystem(monkeypatch):
    """Resolving makes no request; should one be made, it goes to a closed loopback port."""
    import pyarrow.fs as pafs
    monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage._connections.clear()
    assert isinstance(storage.resolve("gs://bucket/run.parquet")[0], pafs.GcsFileSystem)
    fs, path = storage.resolve("abfs://container@account.dfs.core.windows.net/run/a.parquet")
    assert isinstance(fs, pafs.AzureFileSystem) and path == "container/run/a.parquet"
    pytest.importorskip("fsspec")
    pytest.importorskip("huggingface_hub")
    fs, path = storage.resolve("hf://datasets/user/repo/val.parquet")
    assert isinstance(fs, pafs.PyFileSystem) and path == "datasets/user/repo/val.parquet"
    storage._connections.clear()


def test_gcs_without_credentials_is_one_line(monkeypatch):
    """No credentials: the client asks the instance metadata server for a token, here a closed
    loopback port (nothing leaves the machine), and gives up after the retry limit."""
    port = free_port()
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    for name in ("GCE_METADATA_ROOT", "GCE_METADATA_HOST"):
        monkeypatch.setenv(name, f"127.0.0.1:{port}")
    monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(storage, "GCS_RETRY_SECONDS", 1)
    storage._connections.clear()
    start = time.monotonic()
    err = one_line_error(run_cli("report", "gs://bucket/val.parquet"), "gs://bucket/val.parquet",
                         "GCS: the credentials were refused or are missing",
                         "GOOGLE_APPLICATION_CREDENTIALS")
    assert len(err) < 600 and time.monotonic() - start < 20
    storage._connections.clear()


def test_a_missing_optional_package_names_the_extra(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_fsspec(name, *args, **kwargs):
        if name.split(".")[0] in ("fsspec", "huggingface_hub", "aiohttp"):
            raise ImportError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    storage._connections.clear()
    monkeypatch.setattr(builtins, "__import__", no_fsspec)
    for url in ("hf://datasets/user/repo/val.parquet", "https://example.invalid/val.parquet"):
        one_line_error(run_cli("report", url), "pip install 'metricdiff[cloud]'", url)


def test_hugging_face_errors_are_one_line():
    """Offline: huggingface_hub refuses at once, without the network; one line, exit 2."""
    pytest.importorskip("huggingface_hub")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    result = subprocess.run([sys.executable, "-m", "metricdiff", "report",
                             "hf://datasets/user/repo/val.parquet"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "hf://datasets/user/repo/val.parquet: Hugging Face: cannot reach the store" \
        in result.stderr, result.stderr


def test_the_readme_ci_step_reads_its_two_runs_from_a_bucket(s3, local_runs, tmp_path):
    """The README's GitHub Actions step, as written, against the test server."""
    import re
    import shlex
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    step = next(block for block in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
                if "s3://" in block)
    command = re.search(r"(metricdiff compare .*?)\n\s*status=", step, flags=re.S).group(1)
    command = (command.replace("\\\n", " ").replace("${{ github.event.number }}", "7")
               .replace("metricdiff.md", str(tmp_path / "metricdiff.md")))
    bucket = re.search(r"s3://([^/]+)/", command).group(1)
    s3_client = client(s3)
    s3_client.create_bucket(Bucket=bucket)
    s3_client.upload_file(str(local_runs / "digits_logreg.parquet"), bucket,
                          "main/val/part-0.parquet")
    s3_client.upload_file(str(local_runs / "digits_gnb.parquet"), bucket, "pr-7/val/part-0.parquet")
    result = run_cli(*shlex.split(command)[1:])
    assert result.exit_code == 1, result.output  # naive Bayes is worse on NLL: the job fails
    markdown = (tmp_path / "metricdiff.md").read_text()
    assert "**worse**" in markdown and "pr" in markdown


def test_the_dask_engine_reads_object_storage_on_its_workers(s3, local_runs):
    """Workers started with the store's variables in their environment (as a cluster's
    workers get their credentials) read the shards themselves; the numbers are the local
    files' on the local engine."""
    distributed = pytest.importorskip("distributed")
    local = as_json(run_cli("report", str(local_runs / "sharded"), "-f", "json"))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=":0",
                                  silence_logs=50) as cluster:
        remote = as_json(run_cli("report", f"s3://{BUCKET}/data/sharded", "-f", "json",
                                 "--engine", "dask", "--scheduler", cluster.scheduler_address))
    # a task per shard: the classwise sums are added in another order (last bits)
    same_numbers(to_rounding(remote), to_rounding(local), local_runs)
