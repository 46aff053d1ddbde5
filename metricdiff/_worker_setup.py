"""Preloaded by each worker of the LocalCluster metricdiff starts (cluster.dask_engine).

Ctrl-C in a terminal reaches every process of the foreground group, the workers too; a
worker would stop with a traceback on stderr. The metricdiff process handles it instead: it
cancels the tasks and stops the cluster, workers included.

This cluster's scheduler stops when metricdiff stops it, with the workers: a worker whose
heartbeat finds it gone in the meantime (a worker busy with a task when the cluster stops
after a Ctrl-C) would log that with a traceback, and it is no fault, so it is not logged.
"""

import logging
import signal

HEARTBEAT_LOST = "Failed to communicate with scheduler during heartbeat"


class _StoppedWithTheCluster(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(HEARTBEAT_LOST)


def dask_setup(worker) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker").addFilter(_StoppedWithTheCluster())
