"""CPU of one web process per API request, without a server (SPEC §7: ≤ 3 ms per list).

Serves ``--requests`` requests per endpoint through Django's test client, in
this process, on a fresh in-memory SQLite database seeded with ``--tasks``
tasks and ``--runs`` runs, authenticated by an API key, and prints one JSON
object per endpoint: the process CPU time (``time.process_time``) per request,
the least of six rounds and their median, and the Python function calls per
request. No network, no other process: the figure is the web process's own
work (middleware, authentication, the view, the ORM, rendering). On a shared
machine CPU time stretches with the others' load; the calls do not.
``--profile ENDPOINT`` prints the cProfile of that endpoint to stderr as well.

    DATABASE_URL= BROKER_URL= .venv/bin/python tests/benchmarks/api_cpu.py
"""

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_site.settings")
os.environ.setdefault("API_THROTTLE_RATE", "off")
os.environ.setdefault("LOG_LEVEL", "warning")

# The requests are served in rounds; the least CPU per request of a round is the
# figure, since a busy machine only ever stretches CPU time (cache misses, frequency).
ROUNDS = 6
ENDPOINTS = {
    "tasks": "/api/tasks",
    "task": "/api/tasks/{task}",
    "failed_runs": "/api/runs?status=failed",
    "task_runs": "/api/tasks/{task}/runs",
}


def seed(tasks, runs):
    from django.utils import timezone

    from system_app.models import ApiKey
    from tests.factories import TaskFactory, TaskRunFactory, UserFactory

    admin = UserFactory(username="bench", is_staff=True, is_superuser=True)
    made = [TaskFactory(name=f"task {index}", tags=["nightly"], metadata={"i": index}) for index in range(tasks)]
    for index, task in enumerate(made[1:6]):
        task.set_dependencies([made[0].pk, made[index].pk])
    now = timezone.now()
    for index in range(runs):
        failed = index % 10 == 0
        TaskRunFactory(
            task=made[index % max(1, tasks // 10)],
            status="failed" if failed else "completed",
            scheduled_at=now - timedelta(minutes=index),
            started_at=now - timedelta(minutes=index),
            completed_at=now - timedelta(minutes=index, seconds=-1),
            execution_time=1.0,
            exit_code=1 if failed else 0,
            worker_id="w1",
            error_message="boom" if failed else "",
        )
    _key, raw = ApiKey.issue(name="bench", created_by=admin, permissions=["task.read"])
    return made[0].pk, raw


def python_calls(client, path, requests=20):
    """Python function calls per request: a figure that other processes on the
    machine do not change, to compare two versions of the code on a busy one."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        client.get(path)
    profiler.disable()
    return round(pstats.Stats(profiler).total_calls / requests)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--profile", choices=sorted(ENDPOINTS), help="cProfile one endpoint (stderr)")
    arguments = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment
    from rest_framework.test import APIClient

    setup_test_environment()
    settings.DEBUG = False
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    task, raw = seed(arguments.tasks, arguments.runs)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    figures = {}
    for name, path in ENDPOINTS.items():
        path = path.format(task=task)
        if arguments.profile and name != arguments.profile:
            continue
        for _ in range(30):  # warm caches: representations, principals, compiled regexes
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code, response.content[:300])
        profiler = cProfile.Profile() if arguments.profile else None
        if profiler:
            profiler.enable()
        rounds = []
        for _ in range(ROUNDS):
            started = time.process_time()
            for _ in range(arguments.requests // ROUNDS):
                client.get(path)
            rounds.append((time.process_time() - started) * 1000 / (arguments.requests // ROUNDS))
        if profiler:
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(60)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(40)
        rounds.sort()
        figures[name] = {
            "path": path,
            "cpu_ms_per_request": round(rounds[0], 3),
            "cpu_ms_per_request_median": round(rounds[len(rounds) // 2], 3),
            "python_calls_per_request": python_calls(client, path),
        }
    print(
        json.dumps(
            {"tasks": arguments.tasks, "runs": arguments.runs, "requests": arguments.requests, "endpoints": figures},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
