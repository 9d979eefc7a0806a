"""Python task targets for tests and benchmarks (PYTHON_CALLABLE_MODULES=tests.callables).

``os`` is imported on purpose: ``tests.callables:os.system`` names an allowed
module but resolves to a callable of another one, and must be refused.
"""

import os
import subprocess
import time


def noop(*args, **kwargs):
    return None


def echo(*args, **kwargs):
    return [list(args), kwargs]


def greet(name, punctuation="!"):
    print(f"greeting {name}")
    return {"greeting": f"hello {name}{punctuation}"}


def explode():
    raise ValueError("kaboom")


def sleep(seconds):
    time.sleep(seconds)


def spawn_and_sleep(pidfile, seconds):
    """Starts a process in a session of its own, records its pid, then sleeps."""

    child = subprocess.Popen(["sleep", str(seconds)], start_new_session=True)
    with open(pidfile, "w") as handle:
        handle.write(str(child.pid))
    time.sleep(seconds)


def die():
    os._exit(3)
