"""Worker liveness locks (workers_app/liveness.py): on PostgreSQL a worker
process holds an advisory lock for its lifetime, and the dispatcher marks a
worker whose lock is free down at once, without waiting for the heartbeat
timeout. On SQLite nothing changes: the heartbeat timeout decides."""

import time
from datetime import timedelta
from types import SimpleNamespace

import dramatiq
import pytest
from django.db import connection
from django.utils import timezone

from system_app.models import SystemEvent
from tasks_app.dispatcher import recovery
from tasks_app.models import RunStatus
from tests.factories import TaskFactory, TaskRunFactory, WorkerFactory
from workers_app import liveness, runtime
from workers_app.liveness import LivenessLock
from workers_app.middleware import WorkerLifecycle
from workers_app.models import Worker, WorkerStatus

pytestmark = pytest.mark.django_db

postgresql_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL advisory locks")
sqlite_only = pytest.mark.skipif("connection.vendor == 'postgresql'", reason="SQLite fallback")


@pytest.fixture
def locks():
    held = []

    def take(worker_id):
        lock = LivenessLock(worker_id)
        lock.acquire()
        held.append(lock)
        return lock

    yield take
    for lock in held:
        lock.release()


def freed(worker_ids):
    """The ids whose locks are free, once the server has ended the closed
    sessions (it notices a closed connection a moment later)."""
    for _ in range(100):
        found = liveness.unheld(worker_ids)
        if found == set(worker_ids):
            return found
        time.sleep(0.05)
    return found


def running_run(worker):
    return TaskRunFactory(task=TaskFactory(), status=RunStatus.RUNNING, worker_id=worker.pk, started_at=timezone.now())


def test_it_keys_each_worker_id_to_a_signed_32_bit_number():
    keys = {liveness.lock_key(f"host-{n}") for n in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**31) <= key < 2**31 for key in keys)
    assert liveness.lock_key("host-1") == liveness.lock_key("host-1")


@sqlite_only
def test_it_takes_no_lock_and_finds_no_worker_dead_by_its_lock_on_sqlite():
    lock = LivenessLock("w1")
    assert lock.acquire() is False
    assert lock.ensure() is False
    worker = WorkerFactory(liveness_lock=True)
    run = running_run(worker)
    assert liveness.unheld([worker.pk]) == set()
    assert recovery.recover_lost_workers(timezone.now()) == 0
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING


@postgresql_only
def test_it_holds_the_lock_until_released(locks):
    lock = locks("w1")
    assert lock.held
    assert liveness.unheld(["w1", "w2"]) == {"w2"}
    assert liveness.unheld(["w1"]) == set()  # the check released what it took
    lock.release()
    assert freed(["w1"]) == {"w1"}
    assert locks("w1").held  # and left it free


@postgresql_only
def test_it_does_not_take_a_lock_another_process_holds(locks):
    assert locks("w1").held
    second = locks("w1")
    assert (second.held, second.contended) == (False, True)
    assert second.ensure() is False


@postgresql_only
def test_it_takes_the_lock_again_when_its_connection_broke(locks):
    lock = locks("w1")
    lock._connection.close()
    assert lock.ensure() is True
    assert liveness.unheld(["w1"]) == set()


@postgresql_only
def test_it_marks_a_worker_whose_lock_is_free_down_at_once_and_fails_its_runs(locks):
    now = timezone.now()
    gone = WorkerFactory(id="gone", liveness_lock=True, last_heartbeat=now)
    alive = WorkerFactory(id="alive", liveness_lock=True, last_heartbeat=now)
    legacy = WorkerFactory(id="legacy", liveness_lock=False, last_heartbeat=now)  # holds no lock
    locks("alive")
    runs = {worker.pk: running_run(worker) for worker in (gone, alive, legacy)}
    assert recovery.recover_lost_workers(now) == 2  # one worker marked down, one run failed
    statuses = dict(Worker.objects.values_list("pk", "status"))
    assert statuses == {"gone": WorkerStatus.DOWN, "alive": WorkerStatus.ACTIVE, "legacy": WorkerStatus.ACTIVE}
    for worker_id, run in runs.items():
        run.refresh_from_db()
        assert run.status == (RunStatus.FAILED if worker_id == "gone" else RunStatus.RUNNING)
    assert runs["gone"].error_message == recovery.WORKER_LOST
    messages = list(SystemEvent.objects.values_list("message", flat=True))
    assert "worker lost: gone (its process is gone: its liveness lock is free)" in messages
    assert recovery.recover_lost_workers(now) == 0


@postgresql_only
def test_it_still_finds_a_silent_worker_dead_by_its_heartbeat(locks, settings):
    now = timezone.now()
    silent = WorkerFactory(liveness_lock=True, last_heartbeat=now - timedelta(seconds=600))
    locks(silent.pk)  # a wedged process: alive, holding its lock, no heartbeat
    assert recovery.recover_lost_workers(now) == 1
    assert Worker.objects.get(pk=silent.pk).status == WorkerStatus.DOWN


def test_it_registers_whether_the_worker_holds_its_lock_and_releases_it_at_shutdown():
    middleware, broker = WorkerLifecycle(), dramatiq.get_broker()
    worker = SimpleNamespace(consumer_whitelist=None, worker_threads=2, consumers={})
    middleware.after_worker_boot(broker, worker)
    worker_id = runtime.worker_id()
    try:
        expected = connection.vendor == "postgresql"
        assert Worker.objects.get(pk=worker_id).liveness_lock is expected
        assert middleware.beat().liveness_lock is expected
        assert liveness.unheld([worker_id]) == set()
    finally:
        middleware.after_worker_shutdown(broker, worker)
    if connection.vendor == "postgresql":
        assert freed([worker_id]) == {worker_id}
