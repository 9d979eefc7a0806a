"""One sentence on what each API operation does, keyed by its OpenAPI operationId.

SchedulerAutoSchema uses it for operations that carry no description of their
own (an ``extend_schema(description=…)`` or a docstring on the action wins), so
that /api/docs/ and generated clients say what every call is for.
tests/system_app/test_schema_docs.py fails for an operation without one.
"""

OPERATION_DOCS = {
    "auth_login_create": "Log in with a username and password; answers a JWT access token and a refresh token.",
    "auth_refresh_create": "Exchange a refresh token for a new access token (the refresh token rotates).",
    "auth_logout_create": "Revoke a refresh token; the access token expires on its own within JWT_ACCESS_MINUTES.",
    "auth_validate_retrieve": "Who the caller is, how they authenticated and which permissions they hold.",
    "auth_api_keys_list": "List API keys (their prefixes, never the keys themselves).",
    "auth_api_keys_create": "Create an API key; the key is in this response only, store it now.",
    "auth_api_keys_destroy": "Revoke an API key; requests made with it fail from now on.",
    "tasks_list": "List tasks, filtered and ordered by the query parameters.",
    "tasks_create": "Create a task; its next fire is computed from its schedule and timezone.",
    "tasks_retrieve": "One task with its definition, status and latest run.",
    "tasks_update": "Replace a task's definition; fields left out keep their values.",
    "tasks_partial_update": "Change some fields of a task.",
    "tasks_destroy": "Delete a task and its run history (409 while runs are in flight, unless force=true).",
    "tasks_pause_create": "Stop a task firing on its schedule; active runs finish and it can still be triggered.",
    "tasks_resume_create": "Let a paused task fire again, from now on (missed fires are not caught up).",
    "tasks_backfill_create": (
        "Create one run per past fire of the schedule in [start, end] that has no run yet (at most 1,000); "
        "dry_run lists the fire times only."
    ),
    "tasks_history_list": "Every saved version of the task's definition, newest first, with who changed what.",
    "tasks_history_restore_create": (
        "Bring back the task's definition as it was in that version (not its status), saved as a new version."
    ),
    "tasks_trigger_create": "Create a manual run now, optionally overriding arguments, parameters or priority.",
    "tasks_runs_list": "List a task's runs, newest first.",
    "tasks_stats_retrieve": "Counts, success rate and execution times of a task's runs over the last days.",
    "runs_list": "List runs of every task, newest first, filtered by the query parameters.",
    "runs_retrieve": "One run with its output (stdout and stderr tails).",
    "runs_cancel_create": "Cancel a run: a waiting one at once, a running one within about 2 seconds.",
    "runs_retry_create": "Start a new attempt of a failed, timed-out or cancelled run.",
    "schedules_preview_retrieve": "The next fire times of a schedule in a time zone, with the schedule in words.",
    "workers_list": "List workers with their status, queues and load.",
    "workers_retrieve": "One worker with its status, queues and load.",
    "workers_stats_retrieve": "Runs a worker completed and failed over the last days, with its load.",
    "workers_heartbeat_create": "Report a worker alive with its load; an unknown id registers the worker.",
    "workers_drain_create": "Ask a worker to finish its runs and take no new ones.",
    "system_health_retrieve": "Status and latency of the database and the message broker.",
    "system_stats_retrieve": "Tasks and runs by status, throughput, success rate, dispatch lag, workers, queue depths.",
    "system_logs_list": "List system events (worker lost, run recovered, retry scheduled…), newest first.",
    "system_logs_retrieve": "One system event with its context.",
    "system_audit_list": "List audit entries: who changed what, when and from where.",
    "system_audit_retrieve": "One audit entry with its changes.",
    "channels_list": "List notification channels (webhook, Slack, e-mail); credentials are never shown.",
    "channels_create": "Create a notification channel; its credentials are write-only.",
    "channels_retrieve": "One notification channel, without its credentials.",
    "channels_update": "Replace a notification channel's definition.",
    "channels_partial_update": "Change some fields of a notification channel.",
    "channels_destroy": "Delete a notification channel (409 while a task still sends to it).",
    "health_retrieve": "Liveness of this process and its dependencies; no authentication.",
    "ready_retrieve": "Whether this process can serve: database reachable and migrated, broker reachable.",
}
