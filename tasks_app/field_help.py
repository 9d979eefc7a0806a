"""What each field of a task and of a run means, written once.

The models use these texts as their fields' ``help_text``, so the admin's
forms show them under each field and drf-spectacular publishes them as the
OpenAPI descriptions of the API's fields (and so in every generated client).
Say the unit, the default and, where the executor changes the meaning, what
each executor does with it; docs/executors.md has a worked example of each.
"""

TASK_HELP = {
    "id": "Read-only id of the task.",
    "name": "Unique name of the task, 1–255 characters.",
    "description": "Free text for people; the scheduler does not read it.",
    "task_type": "A free label (1–100 characters) to filter tasks by. Defaults to the executor.",
    "executor": (
        "What runs the task: shell (a command line), http (one HTTP request) or python "
        "(a callable). Must be one of ENABLED_EXECUTORS."
    ),
    "command": (
        "shell: the command line, run by /bin/sh -c. "
        "http: the URL (http:// or https://). "
        "python: package.module:callable, in a module under PYTHON_CALLABLE_MODULES."
    ),
    "arguments": (
        "A JSON list. shell: extra words appended to the command line, each quoted as one word. "
        "python: positional arguments of the callable. http: unused. Default []."
    ),
    "parameters": (
        'A JSON object of executor options. shell: "env" (object of string values added to the '
        'environment), "working_directory" (path; default a fresh temporary directory). '
        'http: "method" (default GET), "headers" (object), "body" (a string is sent as is, an object '
        'or list as JSON), "expected_status" (list of codes; default any 2xx). '
        'python: "kwargs" (object of keyword arguments). Default {}.'
    ),
    "schedule": (
        "When the task fires: cron with 5 fields (min hour dom mon dow) or 6 with seconds first; "
        "@yearly, @monthly, @weekly, @daily, @hourly; an interval such as @every 30s or @every 1h30m "
        "(counted from the task's creation); once, @at 2026-12-01T09:00:00+01:00. "
        "Empty (null): only when triggered or by its dependencies."
    ),
    "timezone": "IANA time zone the schedule is evaluated in, e.g. Europe/Berlin. Default UTC.",
    "priority": "low, normal, high or critical: the broker's message priority. Default normal.",
    "queue": "Queue the runs go to; workers choose the queues they serve. Default default.",
    "retry_count": "Retries after a failed or timed-out attempt, 0–10. Default 0.",
    "retry_backoff_seconds": (
        "Seconds; base of the exponential backoff between retries (base × 2^(attempt−1), "
        "with jitter, at most 1 hour). Default 10."
    ),
    "timeout_seconds": "Seconds, 1–86400: the worker stops a run after this long and marks it timeout. Default 3600.",
    "concurrency_policy": (
        "When a run is still active at the next fire: allow (run both), forbid (skip the new "
        "one, recorded as skipped), replace (cancel the old one, start the new one), buffer_one (keep at "
        "most one fire waiting and start it when the active run ends; later fires are skipped). Default allow."
    ),
    "misfire_policy": (
        "Fires missed by more than the misfire grace while no dispatcher ran: run_once (one "
        "catch-up run), skip (none), run_all (the latest 100). Default run_once."
    ),
    "misfire_grace_seconds": (
        "Seconds, 0–86400: how late a fire may still start normally before it counts as missed. Default 60."
    ),
    "dependencies": "Ids of the tasks this one waits for: a run starts once the latest run of each completed.",
    "tags": 'A JSON list of strings to filter by, e.g. ["nightly", "billing"].',
    "metadata": "A JSON object for your own use; the scheduler does not read it.",
    "status": "active or paused. A paused task does not fire on its schedule; it can still be triggered.",
    "notify_on": (
        "A JSON list of what is sent to the task's channels: failure (once per failure streak), recovery "
        "(the first success after one), late, paused (auto-pause), success (every one). "
        'Default ["failure", "recovery", "paused"].'
    ),
    "channels": "Ids of the notification channels that get this task's notifications. Default [].",
    "pause_after_failures": (
        "0–1000: pause the task after this many consecutive unsuccessful final attempts. Default 0 (never)."
    ),
    "max_start_delay_seconds": (
        "Seconds, at least 1: a run not started this long after it was due is late (an event and a late "
        "notification, once per run). Default null (never late)."
    ),
    "paused_by": "Read-only: who paused the task (a username, or system for auto-pause); empty when active.",
    "paused_reason": "Read-only: why the task was paused; empty when active.",
    "failure_streak": "Read-only: consecutive unsuccessful final attempts so far.",
    "next_run_at": "Read-only: the next scheduled fire (UTC), or null.",
    "last_run_at": "Read-only: when the latest run started (UTC).",
    "last_run_status": "Read-only: status of the latest finished run.",
    "created_by": "Read-only: username of who created the task.",
    "created_at": "Read-only: when the task was created (UTC).",
    "updated_at": "Read-only: when the task was last changed (UTC).",
    "jitter_seconds": (
        "Seconds, 0–3600. Default 0. Each scheduled fire is delayed by an offset in [0, jitter) that depends "
        "only on the task and the slot, to spread tasks that share a schedule."
    ),
    "source": (
        "Read-only: the --source of the manage.py applytasks that manages this task; empty for tasks made "
        "in the API or the admin."
    ),
}

RUN_HELP = {
    "id": "Read-only id of the run.",
    "task": "Id of the task this run belongs to.",
    "task_name": "The task's name when the run was created.",
    "status": "pending, dispatched, running, completed, failed, timeout, cancelled or skipped.",
    "trigger": "What created the run: schedule, manual, retry, dependency or backfill.",
    "priority": "The priority given by a manual trigger's override; null: the task's own.",
    "worker_id": "Id of the worker that ran it.",
    "retry_count": "Attempt number of this fire: 0 is the first attempt, 1 the first retry.",
    "scheduled_at": "When the run was due (UTC).",
    "dispatched_at": "When the dispatcher handed it to the broker (UTC).",
    "dispatched_by": "The dispatcher process that marked it dispatched and publishes its message.",
    "started_at": "When a worker started it (UTC).",
    "completed_at": "When it finished (UTC).",
    "exit_code": "shell: the command's exit status; null for other executors.",
    # The admin renders help texts as HTML: no angle brackets here.
    "result": 'Short summary: http "HTTP 200" (its status code), python the return value\'s repr (shortened).',
    "error_message": "Why the run did not complete, if it did not.",
    "stdout": "The tail of standard output (at most RUN_OUTPUT_LIMIT_BYTES); http: the response body.",
    "stderr": "The tail of standard error (at most RUN_OUTPUT_LIMIT_BYTES).",
    "execution_time": "Seconds from start to finish (float).",
    "cancel_requested": "True once a cancel was asked for; a running run stops within about 2 s.",
    "arguments": "A manual trigger's override of the task's arguments; null: the task's own.",
    "parameters": "A manual trigger's override of the task's parameters; null: the task's own.",
    "created_at": "When the run row was created (UTC).",
}
