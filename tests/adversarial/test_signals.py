"""Ctrl-C at any moment, from the first imports to the end: one line, exit 130, no
traceback. (Before the interpreter itself runs Python code, some 30 ms, an interrupted
process just ends by the signal, as any program does; the delays start after that.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "sample_runs", "featA_hpB.parquet")  # 60,000 x 3,000: takes a while


@pytest.mark.parametrize("delay", [0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.5])
def test_ctrl_c_at_any_moment_is_one_line_and_exit_130(delay):
    process = subprocess.Popen([sys.executable, "-m", "metricdiff", "compare", RUN, RUN],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    text = stderr.decode()
    assert "Traceback" not in text, text
    if process.returncode == -signal.SIGINT and text == "":
        return  # the interpreter had not started running Python yet (a loaded machine)
    assert process.returncode == 130, (process.returncode, text)
    assert text.strip() == "metricdiff: interrupted", text


@pytest.mark.parametrize("delay", [0.8, 1.2, 1.5, 2.0, 2.5, 3.5, 5.0])
def test_ctrl_c_in_a_terminal_with_the_dask_engine(delay):
    """A terminal's Ctrl-C reaches the whole foreground process group: metricdiff and the
    workers of the LocalCluster it started. One line, exit 130, no worker's traceback, and
    no process of the group left behind; also while the cluster starts (from about 0.8 s to
    3 s here), when the Ctrl-C waits for it to be up."""
    pytest.importorskip("distributed")
    process = subprocess.Popen([sys.executable, "-m", "metricdiff", "compare", RUN, RUN,
                                "--engine", "dask"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=ROOT, start_new_session=True)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    text = stderr.decode()
    assert "Traceback" not in text, text
    assert process.returncode == 130, (process.returncode, text)
    assert text.strip() == "metricdiff: interrupted", text
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _group_alive(process.pid):
        time.sleep(0.2)
    assert not _group_alive(process.pid)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


WINDOW_SCRIPT = r"""
import os, signal, sys, time
from multiprocessing import forkserver, util
from metricdiff import cluster

spawn = util.spawnv_passfds
def spawn_then_interrupt(path, args, passfds):
    pid = spawn(path, args, passfds)
    if "forkserver" in args[-1]:
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C while the fork server is started
    return pid
util.spawnv_passfds = spawn_then_interrupt
try:
    cluster._start_method()
except KeyboardInterrupt:
    print("interrupted")
server = forkserver._forkserver._forkserver_pid
bit = 1 << (signal.SIGINT - 1)
for _ in range(300):  # the server ignores SIGINT once it has imported its preload
    fields = dict(line.split(":\t") for line in open(f"/proc/{server}/status").read().splitlines()
                  if ":\t" in line)
    if int(fields["SigIgn"], 16) & bit:
        break
    time.sleep(0.1)
print("blocked" if int(fields["SigBlk"], 16) & bit else "unblocked",
      "ignored" if int(fields["SigIgn"], 16) & bit else "handled")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_ctrl_c_while_the_fork_server_starts_is_not_lost():
    """The moment the workers' fork server is spawned: this process keeps the Ctrl-C (it
    was ignored there once, and a CI run carried on to exit 0), and the server starts with
    SIGINT blocked, so neither it nor its forks can die of it before they ignore it."""
    pytest.importorskip("distributed")
    done = subprocess.run([sys.executable, "-c", WINDOW_SCRIPT], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["interrupted", "blocked", "ignored"], done.stdout


LOST_SCRIPT = r"""
import sys, time, weakref
from metricdiff._entry import _quiet_interrupt
sys.unraisablehook = _quiet_interrupt

class Held:
    pass

def callback(ref):
    raise KeyboardInterrupt  # where a Ctrl-C lands when it arrives during the callback

held = Held()
ref = weakref.ref(held, callback)
try:
    del held
    for _ in range(200):
        time.sleep(0.01)
    print("lost")
except KeyboardInterrupt:
    print("interrupted")
"""


def test_a_ctrl_c_in_a_callback_of_the_main_thread_is_raised_again():
    """A Ctrl-C inside a callback Python cannot raise from, on the main thread (a CI run
    lost one there while the cluster started, then waited on workers that had ended)."""
    done = subprocess.run([sys.executable, "-c", LOST_SCRIPT], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert done.stdout.split() == ["interrupted"], (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
