"""Fixtures of the integration suite.

One private PostgreSQL and one private RabbitMQ for this folder (tests/services.py),
the schema migrated into that PostgreSQL by ``manage.py migrate``, and a running
scheduler that the tests share: one ``rundispatcher`` and two ``rundramatiq``
workers. Each test makes its own tasks; a test that needs more processes (a
second dispatcher, workers to kill) starts them with ``spawn``, which stops them
when the test ends. Every process is stopped in a finalizer, pass or fail.

Tests marked ``@pytest.mark.brokers("rabbitmq", "redis")`` run once per broker:
the package's servers, cluster and scheduler are then started once for each
(a private redis-server, tests/services.py), the RabbitMQ tests first.

Under pytest-xdist with ``--dist loadgroup`` (as ``make test`` runs them) two of
these stacks run side by side, one in each xdist process, each with its own
servers, database, broker, scheduler and temporary files: nothing is shared
between them. The tests are split into two groups of about the same length:
the RabbitMQ tests of the slow modules (:data:`FIRST_STACK_MODULES`), and the
other RabbitMQ tests followed by the Redis ones. Without xdist everything runs
in one process, as before.

Missing server binaries skip the suite on a developer machine and fail it in CI
(``CI=true``), where a skipped integration test would hide a broken setup.
"""

import atexit
import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.integration.support import Cluster, Database
from tests.processes import group_members, kill_group, pid_alive
from tests.services import (
    PostgresServer,
    RabbitMQServer,
    RedisServer,
    ServiceError,
    random_secret_key,
    require,
    start_all,
    stop_all,
)
from workers_app.rabbitmq import RabbitmqBroker

BROKER_SERVERS = {"rabbitmq": RabbitMQServer, "redis": RedisServer}

# The RabbitMQ tests of these modules (which kill, restart and wait out
# heartbeats) take about as long as all the others with the Redis stack's start.
FIRST_STACK_MODULES = {
    "test_broker_restart",
    "test_redispatch",
    "test_schedules",
    "test_worker_liveness",
    "test_workers",
}


def pytest_generate_tests(metafunc):
    """``broker_name`` (the servers' broker): the names of the test's ``brokers``
    mark, else rabbitmq. Package-scoped, so each broker's servers start once."""
    if "broker_name" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("brokers")
    names = marker.args if marker else ("rabbitmq",)
    unknown = set(names) - set(BROKER_SERVERS)
    if unknown:
        raise pytest.UsageError(f"brokers mark: unknown broker(s) {sorted(unknown)}")
    metafunc.parametrize("broker_name", names, scope="package")


def _broker_of(item):
    callspec = getattr(item, "callspec", None)
    name = callspec.params.get("broker_name", "rabbitmq") if callspec else "rabbitmq"
    return list(BROKER_SERVERS).index(name)


def pytest_itemcollected(item):
    """Each test of this folder in one of two xdist groups (see the module's
    docstring); ``--dist loadgroup`` runs each group in one process."""
    if Path(__file__).parent not in Path(str(item.path)).parents:
        return
    first = _broker_of(item) == 0 and item.module.__name__.rsplit(".", 1)[-1] in FIRST_STACK_MODULES
    item.add_marker(pytest.mark.xdist_group("integration-first" if first else "integration-second"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The tests of this folder by broker (each broker's servers start once), and
    within a broker, modules with ``RUNS_LAST = True`` (they restart a shared
    server) after the others, so a failure there cannot spill into unrelated
    tests. Tests outside this folder keep their places. Runs after pytest's own
    reordering by fixture parameters."""
    here = Path(__file__).parent
    slots = [index for index, item in enumerate(items) if here in Path(str(item.path)).parents]
    ours = sorted(
        (items[index] for index in slots),
        key=lambda item: (_broker_of(item), bool(getattr(getattr(item, "module", None), "RUNS_LAST", False))),
    )
    for index, item in zip(slots, ours, strict=True):
        items[index] = item


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    cluster = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
    if report.failed and cluster is not None:
        report.sections.append(("scheduler process logs (tails)", cluster.tails()))
    return report


@pytest.fixture(scope="package")
def servers(broker_name):
    """(PostgresServer, the broker's server: RabbitMQServer or RedisServer), started in parallel."""
    broker_server = BROKER_SERVERS[broker_name]
    require("; ".join(filter(None, (PostgresServer.missing_reason(), broker_server.missing_reason()))) or None)
    pg, mq = PostgresServer(), broker_server()
    try:
        start_all([pg, mq])
    except (ServiceError, OSError) as error:
        pytest.fail(f"could not start the integration servers: {error}", pytrace=False)
    try:
        yield pg, mq
    finally:
        stop_all([pg, mq])


@pytest.fixture
def rabbitmq_broker(servers):
    """The project's RabbitMQ broker (workers_app/rabbitmq.py, as in settings) on the package's server."""
    _pg, mq = servers
    broker = RabbitmqBroker(url=mq.url, max_priority=10)
    yield broker
    broker.close()


@pytest.fixture(scope="package")
def cluster(servers, tmp_path_factory):
    """Starts and stops the scheduler's processes; the schema is migrated first."""
    pg, mq = servers
    cluster = Cluster(pg.url, mq.url, random_secret_key(), tmp_path_factory.mktemp("process-logs"))
    atexit.register(cluster.stop_all)  # an interrupted session must not leave processes behind
    try:
        result = cluster.manage("migrate", "--noinput")
        if result.returncode != 0:
            pytest.fail(f"manage.py migrate failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
        yield cluster
    finally:
        cluster.stop_all()
        atexit.unregister(cluster.stop_all)


@pytest.fixture(scope="package")
def db(cluster, servers):
    database = Database(servers[0].url)
    yield database
    database.close()


@pytest.fixture(scope="package")
def scheduler(cluster, db):
    """The shared scheduler: dispatcher d1 and workers it-w1, it-w2 (queue default, 4 threads each)."""
    dispatcher = cluster.start_dispatcher("d1")
    workers = [cluster.start_worker("it-w1"), cluster.start_worker("it-w2")]
    cluster.wait_ready(db, dispatcher, *workers)
    return SimpleNamespace(dispatcher=dispatcher, workers=workers)


@pytest.fixture
def spawn(cluster, db):
    """Start more processes for one test; they are stopped when it ends."""
    started = []

    def dispatcher(name, **env):
        process = cluster.start_dispatcher(name, **env)
        started.append(process)
        return process

    def worker(worker_id, **kwargs):
        process = cluster.start_worker(worker_id, **kwargs)
        started.append(process)
        return process

    yield SimpleNamespace(dispatcher=dispatcher, worker=worker)
    for process in reversed(started):
        cluster.stop(process)


@pytest.fixture
def tmp_path():
    """A directory the tasks' commands can write to: a worker running as root
    runs them as RUN_AS_USER (nobody), which pytest's own 0700 directories
    keep out."""
    path = Path(tempfile.mkdtemp(prefix="integration-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def leftovers():
    """Processes a test's commands may leave behind (a product bug, or a run whose
    worker was killed): the test lists their pids, the fixture kills what is
    still alive, the whole group when the pid leads one."""
    pids = []
    yield pids
    for pid in pids:
        if group_members(pid):
            kill_group(pid, grace=1.0)
        elif pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(autouse=True)
def _quiet_after_test(request):
    """After each test, its schedules stop firing and its runs stop running, so
    the next test starts with idle workers."""
    yield
    if "db" not in request.fixturenames:
        return
    database = request.getfixturevalue("db")
    database.execute(
        "UPDATE tasks_app_task SET status = 'paused', next_run_at = NULL "
        "WHERE status = 'active' AND schedule IS NOT NULL"
    )
    database.execute(
        "UPDATE tasks_app_taskrun SET status = 'cancelled', completed_at = now(), cancel_requested = true, "
        "error_message = 'cleanup after the test' WHERE status IN ('pending', 'dispatched')"
    )
    database.execute("UPDATE tasks_app_taskrun SET cancel_requested = true WHERE status = 'running'")
