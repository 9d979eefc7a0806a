"""The statements of the hot paths (SPEC §7): a worker's claim and finish, a
plan batch's writes, an enqueue batch's publishing. Counts, not timings; the
behaviour itself is covered by the tests of each feature."""

import re
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.db import connection, connections
from django.utils import timezone
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from tasks_app import run_sql
from tasks_app.dispatcher import enqueueing, publishing, sql
from tasks_app.dispatcher.planning import plan_due_tasks
from tasks_app.models import RunStatus, Task, TaskRun
from tasks_app.notifications.models import Notification
from tests.factories import ChannelFactory, TaskFactory, TaskRunFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC)
POSTGRESQL = connection.vendor == "postgresql"


def dispatched(**task_fields):
    task = TaskFactory(**task_fields)
    return TaskRunFactory(task=task, status=RunStatus.DISPATCHED, dispatched_at=NOW, scheduled_at=NOW)


def outcome(status=RunStatus.COMPLETED, **fields):
    values = {"exit_code": 0, "result": "ok", "error_message": "", "stdout": "out", "stderr": "", "execution_time": 0.1}
    return SimpleNamespace(status=status, **{**values, **fields})


# Worker: claim ------------------------------------------------------------------


def test_it_claims_a_run_with_its_task_in_one_statement_on_postgresql(django_assert_num_queries):
    run = dispatched(arguments=["a", 1], parameters={"k": "v"})
    with django_assert_num_queries(1 if POSTGRESQL else 2):  # SQLite: UPDATE … RETURNING, then the task
        claimed = TaskRun.claim(run.pk, "worker-1", NOW + timedelta(seconds=1))
    with django_assert_num_queries(0):
        assert claimed.task.command == run.task.command
        assert claimed.task.arguments == ["a", 1]
        assert claimed.task.parameters == {"k": "v"}
    assert (claimed.status, claimed.worker_id, claimed.started_at) == (
        RunStatus.RUNNING,
        "worker-1",
        NOW + timedelta(seconds=1),
    )
    assert claimed.scheduled_at == NOW and claimed.scheduled_at.tzinfo is not None
    assert claimed.cancel_requested is False and claimed.late_reported is False
    run.refresh_from_db()
    assert (run.status, run.worker_id) == (RunStatus.RUNNING, "worker-1")


def test_it_returns_a_claimed_run_equal_to_the_one_the_orm_loads():
    run = dispatched()
    TaskRun.objects.filter(pk=run.pk).update(arguments={"x": [1, 2]}, parameters=None, priority="high")
    claimed = TaskRun.claim(run.pk, "worker-1", NOW)
    loaded = TaskRun.objects.select_related("task").get(pk=run.pk)
    for field in TaskRun._meta.concrete_fields:
        assert getattr(claimed, field.attname) == getattr(loaded, field.attname), field.name
    for field in Task._meta.concrete_fields:
        assert getattr(claimed.task, field.attname) == getattr(loaded.task, field.attname), field.name
    assert claimed._state.adding is False


def test_it_claims_nothing_twice_nor_a_run_not_dispatched(django_assert_num_queries):
    run = dispatched()
    assert TaskRun.claim(run.pk, "worker-1", NOW) is not None
    with django_assert_num_queries(1):
        assert TaskRun.claim(run.pk, "worker-2", NOW) is None
    assert TaskRun.claim(999_999, "worker-2", NOW) is None
    run.refresh_from_db()
    assert run.worker_id == "worker-1"


# Worker: finish -----------------------------------------------------------------


# PostgreSQL: the run's UPDATE and the task's in one statement, no transaction;
# SQLite: savepoint, the run's UPDATE, the task's UPDATE … RETURNING, release.
FINISH_QUERIES = 1 if POSTGRESQL else 4


def test_it_finishes_a_successful_run_in_one_statement(django_assert_num_queries):
    run = TaskRun.claim(dispatched().pk, "worker-1", NOW)
    with django_assert_num_queries(FINISH_QUERIES):
        assert run.finish(outcome(), NOW + timedelta(seconds=2))
    run.refresh_from_db()
    assert (run.status, run.stdout, run.completed_at) == (RunStatus.COMPLETED, "out", NOW + timedelta(seconds=2))
    task = Task.objects.get(pk=run.task_id)
    assert (task.last_run_at, task.last_run_status) == (NOW, RunStatus.COMPLETED)


def test_it_finishes_a_failed_attempt_with_retries_left_in_one_statement(django_assert_num_queries):
    run = TaskRun.claim(dispatched(retry_count=2).pk, "worker-1", NOW)
    with django_assert_num_queries(FINISH_QUERIES):
        assert run.finish(outcome(RunStatus.FAILED, exit_code=1), NOW)
    assert Task.objects.get(pk=run.task_id).failure_streak == 0


def test_it_still_counts_streaks_and_notifies_when_the_outcome_matters():
    channel = ChannelFactory()
    run = TaskRun.claim(dispatched(notify_on=["failure", "recovery"], channels=[channel.pk]).pk, "worker-1", NOW)
    assert run.finish(outcome(RunStatus.FAILED, exit_code=1), NOW)
    assert Task.objects.get(pk=run.task_id).failure_streak == 1
    second = TaskRunFactory(task=run.task, status=RunStatus.DISPATCHED, scheduled_at=NOW + timedelta(minutes=1))
    second = TaskRun.claim(second.pk, "worker-1", NOW + timedelta(minutes=1))
    assert second.finish(outcome(), NOW + timedelta(minutes=1))
    assert Task.objects.get(pk=run.task_id).failure_streak == 0
    assert sorted(Notification.objects.values_list("event", flat=True)) == ["failure", "recovery"]


def test_it_counts_a_streak_that_began_after_the_claim():
    channel = ChannelFactory()
    task = TaskFactory(notify_on=["failure", "recovery"], channels=[channel.pk])
    run = TaskRun.claim(TaskRunFactory(task=task, status=RunStatus.DISPATCHED, scheduled_at=NOW).pk, "worker-1", NOW)
    # Another run of the task failed for good while this one ran.
    Task.objects.filter(pk=task.pk).update(failure_streak=2)
    assert run.finish(outcome(), NOW)
    assert Task.objects.get(pk=task.pk).failure_streak == 0
    assert list(Notification.objects.values_list("event", flat=True)) == ["recovery"]


def test_it_finishes_a_run_whose_task_was_not_loaded():
    run = TaskRun.claim(dispatched().pk, "worker-1", NOW)
    unloaded = TaskRun.objects.get(pk=run.pk)
    assert unloaded.finish(outcome(RunStatus.FAILED, exit_code=1), NOW)
    task = Task.objects.get(pk=run.task_id)
    assert (task.last_run_status, task.failure_streak) == (RunStatus.FAILED, 1)


def test_it_notifies_a_success_when_the_task_asks():
    channel = ChannelFactory()
    run = TaskRun.claim(dispatched(notify_on=["success"], channels=[channel.pk]).pk, "worker-1", NOW)
    assert run.finish(outcome(), NOW)
    assert list(Notification.objects.values_list("event", flat=True)) == ["success"]


def test_it_drops_the_outcome_of_a_run_no_longer_running_on_this_worker(django_assert_num_queries):
    run = TaskRun.claim(dispatched().pk, "worker-1", NOW)
    TaskRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, error_message="worker lost")
    with django_assert_num_queries(1 if POSTGRESQL else 3):  # SQLite: savepoint, the UPDATE, release
        assert run.finish(outcome(), NOW) is False
    run.refresh_from_db()
    assert (run.status, run.error_message) == (RunStatus.FAILED, "worker lost")


# Worker: claims and finishes of several threads, one statement -------------------


def claims(*run_ids, worker="worker-1", now=NOW):
    return run_sql.claim_runs(
        TaskRun, Task, [(run_id, worker, now) for run_id in run_ids], RunStatus.DISPATCHED, RunStatus.RUNNING
    )


def test_it_claims_several_runs_in_one_statement_on_postgresql(django_assert_num_queries):
    first, second = dispatched(), dispatched()
    done = TaskRunFactory(task=first.task, status=RunStatus.COMPLETED, scheduled_at=NOW - timedelta(minutes=1))
    with django_assert_num_queries(1 if POSTGRESQL else 5):  # SQLite: per run, its UPDATE, then its task
        claimed = claims(second.pk, done.pk, first.pk, second.pk)
    # One entry per claim in their order; a run asked for twice goes to the first claim only.
    assert [run and run.pk for run in claimed] == [second.pk, None, first.pk, None]
    assert claimed[0].task.pk == second.task_id and claimed[2].task.pk == first.task_id
    assert set(TaskRun.objects.filter(status=RunStatus.RUNNING).values_list("pk", flat=True)) == {first.pk, second.pk}


def test_a_claim_without_a_time_starts_at_the_time_of_the_statement():
    before = timezone.now()
    (run,) = run_sql.claim_runs(
        TaskRun, Task, [(dispatched().pk, "worker-1", None)], RunStatus.DISPATCHED, RunStatus.RUNNING
    )
    assert before <= run.started_at <= timezone.now()
    assert TaskRun.objects.get(pk=run.pk).started_at == run.started_at


def finishes(*runs, status=RunStatus.COMPLETED, now=NOW):
    fields = {"status": status, "exit_code": None, "result": "r", "error_message": "", "stdout": "", "stderr": ""}
    fields |= {"execution_time": None, "completed_at": now}
    return run_sql.finish_runs(TaskRun, Task, [(run, dict(fields)) for run in runs], RunStatus.RUNNING)


def test_it_finishes_several_runs_in_one_statement_on_postgresql(django_assert_num_queries):
    task = TaskFactory()
    older, newer = (
        TaskRunFactory(task=task, status=RunStatus.DISPATCHED, scheduled_at=NOW + timedelta(seconds=offset))
        for offset in (0, 1)
    )
    other = dispatched()
    claims(older.pk, worker="worker-1", now=NOW)
    claims(newer.pk, worker="worker-1", now=NOW + timedelta(seconds=1))
    claims(other.pk, worker="worker-2", now=NOW)
    lost = dispatched()
    claims(lost.pk)
    TaskRun.objects.filter(pk=lost.pk).update(status=RunStatus.FAILED)  # declared lost meanwhile
    runs = {run.pk: run for run in TaskRun.objects.filter(pk__in=[older.pk, newer.pk, other.pk, lost.pk])}
    with django_assert_num_queries(1 if POSTGRESQL else 15):  # SQLite: per run, savepoint, UPDATE(s), release
        states = finishes(runs[newer.pk], runs[lost.pk], runs[other.pk], runs[older.pk], now=NOW + timedelta(seconds=5))
    assert [state is not None for state in states] == [True, False, True, True]
    assert states[0] == (0, task.notify_on, task.retry_count)
    # Two runs of one task in the batch: the newest started is its last run.
    assert Task.objects.get(pk=task.pk).last_run_at == NOW + timedelta(seconds=1)
    assert Task.objects.get(pk=other.task_id).last_run_status == RunStatus.COMPLETED
    statuses = dict(TaskRun.objects.values_list("pk", "status"))
    assert statuses == {
        older.pk: RunStatus.COMPLETED,
        newer.pk: RunStatus.COMPLETED,
        other.pk: RunStatus.COMPLETED,
        lost.pk: RunStatus.FAILED,
    }


AWKWARD_TEXTS = ['say "hi"', "C:\\temp\\", '\\"', "{a,b}", "NULL", "", " padded ", "line\nbreak\ttab", "ünïcødé ✓"]


def test_a_finish_records_any_text_and_number_exactly():
    """The batch's arrays go to PostgreSQL as array literals (run_sql.array_literal)."""
    runs = [dispatched() for _text in AWKWARD_TEXTS]
    claims(*(run.pk for run in runs))
    runs = list(TaskRun.objects.filter(pk__in=[run.pk for run in runs]).order_by("pk"))
    outcomes = [
        {"status": RunStatus.FAILED, "exit_code": -n, "result": text, "error_message": text[::-1]}
        | {"stdout": text * 2, "stderr": "", "execution_time": 1 / (n + 3) if n % 2 else None, "completed_at": NOW}
        for n, text in enumerate(AWKWARD_TEXTS)
    ]
    states = run_sql.finish_runs(TaskRun, Task, list(zip(runs, outcomes, strict=True)), RunStatus.RUNNING)
    assert all(state is not None for state in states)
    saved = list(TaskRun.objects.filter(pk__in=[run.pk for run in runs]).order_by("pk").values(*outcomes[0]))
    assert saved == outcomes


@pytest.mark.skipif(not POSTGRESQL, reason="array literals are PostgreSQL's")
def test_an_array_literal_reads_back_as_its_values():
    literal = run_sql.array_literal
    numbers = ([7, -(2**62)], [0.1, 1e-05], [NOW, NOW + timedelta(microseconds=1)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT unnest(%s::text[])", [literal([*AWKWARD_TEXTS, None])])
        assert [text for (text,) in cursor.fetchall()] == [*AWKWARD_TEXTS, None]
        cursor.execute(
            "SELECT unnest(%s::bigint[]), unnest(%s::float8[]), unnest(%s::timestamptz[])", [*map(literal, numbers)]
        )
        assert cursor.fetchall() == list(zip(*numbers, strict=True))


def test_a_finish_matches_its_own_worker_only():
    run = dispatched()
    claims(run.pk, worker="worker-1")
    stranger = TaskRun.objects.get(pk=run.pk)
    stranger.worker_id = "worker-2"
    assert finishes(stranger) == [None]
    assert TaskRun.objects.get(pk=run.pk).status == RunStatus.RUNNING


@pytest.mark.skipif(not POSTGRESQL, reason="the threads of a worker share statements on PostgreSQL only")
@pytest.mark.django_db(transaction=True)
def test_threads_that_claim_and_finish_at_once_each_get_their_own_run():
    runs = [dispatched() for _ in range(24)]
    start = threading.Barrier(8)
    done, errors = [], []

    def work(mine):
        try:
            start.wait(10)
            for run in mine:
                claimed = TaskRun.claim(run.pk, "worker-1")
                assert claimed.pk == run.pk and claimed.task.pk == run.task_id
                assert claimed.finish(outcome(), timezone.now())
                done.append(run.pk)
        except Exception as error:  # reported below, from the test's thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(runs[number::8],)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(done) == sorted(run.pk for run in runs)
    assert set(TaskRun.objects.values_list("status", flat=True)) == {RunStatus.COMPLETED}
    assert not Task.objects.filter(last_run_at__isnull=True).exists()


def prepared_statements():
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.skipif(not POSTGRESQL, reason="PostgreSQL prepares statements on the server")
def test_it_prepares_the_claim_and_the_finish_once_per_connection():
    run = TaskRun.claim(dispatched().pk, "worker-1", NOW)
    assert run.finish(outcome(), NOW)
    statements = prepared_statements()
    assert sum('WITH "claimed"' in statement for statement in statements) == 1
    assert sum('WITH "finished"' in statement for statement in statements) == 1
    # Django's own queries are not prepared.
    assert not any("pg_prepared_statements" in statement for statement in statements)


@pytest.mark.skipif(not POSTGRESQL, reason="PostgreSQL prepares statements on the server")
def test_it_prepares_nothing_when_the_database_url_says_off(monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "PREPARED_STATEMENTS", False)
    before = sorted(prepared_statements())  # the connection may have prepared some for an earlier test
    run = TaskRun.claim(dispatched().pk, "worker-1", NOW)
    assert run.finish(outcome(), NOW)
    assert sorted(prepared_statements()) == before


@pytest.mark.skipif(not POSTGRESQL, reason="PostgreSQL prepares statements on the server")
@pytest.mark.parametrize("prepared", [True, False])
def test_it_plans_a_batch_with_or_without_prepared_statements(monkeypatch, prepared):
    monkeypatch.setitem(connection.settings_dict, "PREPARED_STATEMENTS", prepared)
    before = sorted(prepared_statements())
    task = TaskFactory(schedule="* * * * *", next_run_at=NOW - timedelta(seconds=30))
    assert plan_due_tasks(NOW) == 1
    assert TaskRun.objects.get(task=task).scheduled_at == NOW - timedelta(seconds=30)
    assert Task.objects.get(pk=task.pk).next_run_at == NOW + timedelta(seconds=30)
    statements = prepared_statements()
    if prepared:  # the due tasks' SELECT, the INSERT and the next_run_at UPDATE (now or by an earlier test)
        assert all(any(word in statement for statement in statements) for word in ("SKIP LOCKED", "INSERT", "unnest"))
    else:
        assert sorted(statements) == before


class FakeConnection:
    def __init__(self):
        self.executed = []

    def execute(self, sql):
        self.executed.append(sql)


def test_a_batch_statement_is_prepared_again_each_time_its_executions_double():
    db = SimpleNamespace(settings_dict={"PREPARED_STATEMENTS": True}, in_atomic_block=False)
    db.connection = FakeConnection()
    marks = [run_sql._batch_statement(db, "SELECT 1").removeprefix("SELECT 1 ") for _ in range(9)]
    assert marks == ["/* plan 1 */"] + ["/* plan 2 */"] * 2 + ["/* plan 3 */"] * 4 + ["/* plan 4 */"] * 2
    assert run_sql._batch_statement(db, "SELECT 2") == "SELECT 2 /* plan 1 */"  # counted per statement
    assert db.connection.executed == ["SET plan_cache_mode = force_generic_plan"]  # once per connection
    db._batch_plans[1]["SELECT 1"] = 2**40
    assert run_sql._batch_statement(db, "SELECT 1") == f"SELECT 1 /* plan {run_sql.REPLANS} */"
    db.connection = FakeConnection()  # a new connection prepares everything afresh
    assert run_sql._batch_statement(db, "SELECT 1") == "SELECT 1 /* plan 1 */"
    assert db.connection.executed == ["SET plan_cache_mode = force_generic_plan"]
    db.connection, db.in_atomic_block = FakeConnection(), True  # a rollback would undo the SET
    run_sql._batch_statement(db, "SELECT 1")
    run_sql._batch_statement(db, "SELECT 1")
    assert len(db.connection.executed) == 2
    assert run_sql._batch_statement(SimpleNamespace(settings_dict={}), "SELECT 1") == "SELECT 1"


@pytest.mark.skipif(not POSTGRESQL, reason="PostgreSQL prepares statements on the server")
@pytest.mark.django_db(transaction=True)
def test_a_batch_statement_is_planned_once_not_per_execution():
    connection.close()  # a connection of its own, whose statements this test counts
    for _ in range(3):
        run = TaskRun.claim(dispatched().pk, "worker-1")
        assert run.finish(outcome())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE 'WITH \"claimed\"%%plan 2 */'"
        )
        assert cursor.fetchall() == [(2, 0)]  # the claim's second and third executions
    connection.close()


def generic_plan(statement):
    """PostgreSQL's generic plan of ``statement`` (with %s and %b placeholders)."""
    placeholders = re.findall(r"%[sb]", statement)
    numbers = iter(range(1, len(placeholders) + 1))
    with connection.cursor() as cursor:
        cursor.execute("PREPARE plan_shape AS " + re.sub(r"%[sb]", lambda _match: f"${next(numbers)}", statement))
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(f"EXPLAIN EXECUTE plan_shape({', '.join(['NULL'] * len(placeholders))})")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("DEALLOCATE plan_shape")
    return plan


@pytest.mark.skipif(not POSTGRESQL, reason="plans of PostgreSQL")
def test_the_batch_statements_probe_the_runs_primary_key_on_a_table_without_statistics():
    # A new installation's tables, filled and not yet analyzed: copies of the
    # runs and tasks tables in a schema of their own, first on the search path.
    run = dispatched()
    with connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA plan_shape")
        for table in (TaskRun._meta.db_table, Task._meta.db_table):
            cursor.execute(f"CREATE TABLE plan_shape.{table} (LIKE public.{table} INCLUDING ALL)")
        cursor.execute("SET LOCAL search_path = plan_shape, public")
        cursor.execute(
            f"INSERT INTO plan_shape.{TaskRun._meta.db_table} "
            "SELECT (jsonb_populate_record(run, jsonb_build_object('id', number, "
            "'scheduled_at', run.scheduled_at + number * interval '1 second', "
            "'status', CASE WHEN number %% 10 = 0 THEN 'dispatched' ELSE 'completed' END))).* "
            f"FROM public.{TaskRun._meta.db_table} AS run, generate_series(1, 10000) AS number WHERE run.id = %s",
            [run.pk],
        )
    names = ("status", "exit_code", "result", "error_message", "stdout", "stderr", "execution_time", "completed_at")
    for statement in (
        run_sql._claim_sql(TaskRun, Task, type(connections["default"]))[0],
        run_sql._finish_runs_sql(TaskRun, Task, names),
    ):
        plan = generic_plan(statement)
        # Not the status index (PostgreSQL takes ``status = $n`` for a
        # selective condition while the column has no statistics), nor a scan
        # of the whole table: one probe of the primary key per run.
        assert f"Index Scan using {TaskRun._meta.db_table}_pkey" in plan, plan
        assert f"Seq Scan on {TaskRun._meta.db_table}" not in plan, plan
        assert "status" not in plan.split("Index Cond")[-1].split("\n")[0], plan


def test_it_keeps_nul_characters_out_of_the_stored_output():
    run = TaskRun.claim(dispatched().pk, "worker-1", NOW)
    assert run.finish(outcome(stdout="a\x00b", result="r\x00"), NOW)
    run.refresh_from_db()
    assert (run.stdout, run.result) == ("ab", "r")


# Dispatcher: a plan batch ----------------------------------------------------------


def plan_queries(django_assert_max_num_queries, count):
    """The statements of one plan batch over ``count`` due tasks, as sent (the
    prepared ones are logged without their text)."""
    for _ in range(count):
        TaskFactory(schedule="* * * * *", next_run_at=NOW - timedelta(seconds=30))
    sent = []

    def record(execute, sql, params, many, context):
        sent.append(sql)
        return execute(sql, params, many, context)

    with django_assert_max_num_queries(100) as captured, connection.execute_wrapper(record):
        assert plan_due_tasks(NOW, batch_size=1000)
    assert len(sent) == len(captured.captured_queries)
    return sent


def test_it_writes_a_plan_batch_in_the_same_statements_whatever_its_size(django_assert_max_num_queries):
    small = plan_queries(django_assert_max_num_queries, 3)
    Task.objects.all().delete()
    large = plan_queries(django_assert_max_num_queries, 60)
    assert len(small) == len(large)
    assert TaskRun.objects.filter(scheduled_at=NOW - timedelta(seconds=30)).count() == 60
    if POSTGRESQL:  # set-based: one array per column, whatever the number of rows
        assert any("INSERT" in sql and "unnest" in sql for sql in large)
        assert any(sql.startswith("UPDATE") and "unnest" in sql for sql in large)


def test_it_inserts_runs_ignoring_planned_slots_with_every_kind_of_value():
    task = TaskFactory()
    TaskRunFactory(task=task, scheduled_at=NOW, error_message="first")
    rows = [
        {"task_id": task.pk, "task_name": task.name, "scheduled_at": NOW, "error_message": "duplicate"},
        {
            "task_id": task.pk,
            "task_name": task.name,
            "scheduled_at": NOW + timedelta(minutes=1),
            "status": RunStatus.SKIPPED.value,
            "completed_at": NOW,
            "arguments": ["a", {"b": None}],
            "parameters": {"p": 1},
            "error_message": "skipped",
        },
        {"task_id": task.pk, "task_name": task.name, "scheduled_at": NOW + timedelta(minutes=2)},
    ]
    sql.insert_ignoring_conflicts(TaskRun, rows)
    runs = list(TaskRun.objects.filter(task=task).order_by("scheduled_at"))
    assert [run.error_message for run in runs] == ["first", "skipped", ""]
    assert runs[1].arguments == ["a", {"b": None}] and runs[1].parameters == {"p": 1}
    assert runs[2].arguments is None and runs[2].completed_at is None
    assert (runs[2].status, runs[2].cancel_requested) == (RunStatus.PENDING, False)


def test_it_inserts_a_value_shared_by_every_row_into_every_row():
    first, second = TaskFactory(), TaskFactory()
    rows = [
        {
            "task_id": task.pk,
            "task_name": task.name,
            "scheduled_at": NOW + timedelta(minutes=minute),
            "status": RunStatus.SKIPPED.value,
            "completed_at": NOW,
            "error_message": "the same",
            "arguments": ["a"],
        }
        for task in (first, second)
        for minute in (1, 2)
    ]
    sql.insert_ignoring_conflicts(TaskRun, rows)
    runs = TaskRun.objects.filter(task__in=[first, second])
    assert runs.count() == 4
    assert {(run.status, run.completed_at, run.error_message, tuple(run.arguments)) for run in runs} == {
        (RunStatus.SKIPPED, NOW, "the same", ("a",))
    }


def test_in_array_selects_the_listed_rows_with_one_array_parameter(django_assert_num_queries):
    runs = TaskRunFactory.create_batch(3)
    listed = TaskRun.objects.filter(pk__in_array=[runs[0].pk, runs[2].pk])
    assert sorted(listed.values_list("pk", flat=True)) == [runs[0].pk, runs[2].pk]
    assert not TaskRun.objects.filter(pk__in_array=[]).exists()
    with django_assert_num_queries(1) as queries:
        assert TaskRun.objects.filter(pk__in_array=[run.pk for run in runs]).mark_dispatched(NOW, by="d1") == 3
    if POSTGRESQL:  # one statement text whatever the number of ids
        assert "= ANY(" in queries[0]["sql"] and " IN (" not in queries[0]["sql"]


def test_it_sets_next_run_at_of_many_tasks_at_once_none_included():
    first, second = TaskFactory(next_run_at=NOW), TaskFactory(next_run_at=NOW)
    sql.set_next_run_at([(first.pk, NOW + timedelta(hours=1)), (second.pk, None)])
    assert Task.objects.get(pk=first.pk).next_run_at == NOW + timedelta(hours=1)
    assert Task.objects.get(pk=second.pk).next_run_at is None


# Dispatcher: an enqueue batch's publishing ----------------------------------------


class FakeChannel:
    """Stands for pika's BlockingChannel: records frames and flushes."""

    def __init__(self, fail_on_publish=None):
        self.published, self.flushes, self.fail_on_publish = [], 0, fail_on_publish
        self._impl = self

    def basic_publish(self, exchange, routing_key, body, properties):
        if self.fail_on_publish is not None and len(self.published) == self.fail_on_publish:
            raise RuntimeError("encoding failed")
        self.published.append((routing_key, body, properties.priority))

    def _flush_output(self):
        self.flushes += 1


@pytest.fixture
def rabbitmq(monkeypatch):
    broker = RabbitmqBroker(url="amqp://127.0.0.1:9/%2F")  # never connected: the channel is fake
    monkeypatch.setattr(broker, "_ensure_queue", lambda name: None)
    channel = FakeChannel()
    broker.state.channel = channel
    return broker, channel


def test_it_publishes_to_rabbitmq_with_one_flush_per_thousand_messages(rabbitmq):
    broker, channel = rabbitmq
    rows = [(run_id, "default" if run_id % 2 else "reports", run_id % 10) for run_id in range(2500)]
    assert enqueueing.publish(broker, rows) == 2500
    assert channel.flushes == 3
    assert [(queue, priority) for queue, _body, priority in channel.published] == [
        (queue, level) for _run_id, queue, level in rows
    ]
    first = enqueueing.build_message(0, "default", 0).decode(channel.published[0][1])
    assert (first.actor_name, first.args) == (enqueueing.ACTOR_NAME, (0,))


def test_it_counts_the_chunks_sent_before_a_publishing_error(rabbitmq):
    broker, channel = rabbitmq
    channel.fail_on_publish = publishing.FLUSH_EVERY + 5
    with pytest.raises(enqueueing.PublishError) as raised:
        enqueueing.publish(broker, [(run_id, "default", 5) for run_id in range(1500)])
    assert raised.value.sent == publishing.FLUSH_EVERY
