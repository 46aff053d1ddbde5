"""Preloaded by each worker of the LocalCluster metricdiff starts (cluster.dask_engine).

Ctrl-C in a terminal reaches every process of the foreground group, the workers too; a
worker would stop with a traceback on stderr. The metricdiff process handles it instead: it
cancels the tasks and stops the cluster, workers included.
"""

import signal


def dask_setup(worker) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
