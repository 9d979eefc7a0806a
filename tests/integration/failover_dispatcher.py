"""``manage.py rundispatcher`` with two hooks of the failover test, set by
environment variables (tests only; the product has no such knobs):

* FAILOVER_PAUSE_BEFORE_PUBLISH=PATH: the first publish writes PATH and
  blocks for good, so the process has runs marked `dispatched` and unpublished
  until it is killed;
* FAILOVER_REDISPATCH_AFTER_SECONDS=N: the 60 s re-dispatch waits N seconds,
  so only the failover can start a dead dispatcher's runs.

    python -m tests.integration.failover_dispatcher
"""

import os
import threading
from datetime import timedelta
from pathlib import Path

import django


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_site.settings")
    django.setup()
    from django.core.management import call_command

    from tasks_app.dispatcher import enqueueing, recovery

    marker = os.environ.get("FAILOVER_PAUSE_BEFORE_PUBLISH")
    if marker:

        def paused(_broker, messages):
            Path(marker).write_text(f"{len(messages)}\n")
            threading.Event().wait()

        enqueueing.publish_messages = paused
    age = os.environ.get("FAILOVER_REDISPATCH_AFTER_SECONDS")
    if age:
        recovery.REDISPATCH_AFTER = timedelta(seconds=float(age))
    call_command("rundispatcher")


if __name__ == "__main__":
    main()
