"""The directory the worker processes of one gunicorn master share.

gunicorn.conf.py makes it before the first worker starts, names it in
``SCHEDULER_WEB_RUN_DIR`` (its ``RUN_DIR``) and removes it at exit; outside
such a master (one web process, the dispatcher, a worker, tests) it is unset.
"""

import os

VARIABLE = "SCHEDULER_WEB_RUN_DIR"


def shared_path(name, directory=None):
    """The path of ``name`` in the shared directory (``directory`` when given,
    else the environment's), or None when the processes share none."""
    directory = directory if directory is not None else os.environ.get(VARIABLE)
    return os.path.join(directory, name) if directory else None
