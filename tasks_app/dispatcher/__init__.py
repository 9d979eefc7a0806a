"""The dispatcher (SPEC §2): plans due runs, gates them, enqueues them, retries, recovers.

Each step is a plain function ``step(now, ...) -> bool`` (found work) run by
``rundispatcher`` through :class:`tasks_app.dispatcher.loop.Dispatcher`:

* planning.plan_due_tasks     due schedules -> runs (misfire, concurrency policies)
* gating.trigger_dependents   dependency-only tasks whose upstreams completed -> runs
* gating.open_gates           pending runs whose dependencies are met -> enqueueable
* enqueueing.enqueue_ready_runs  ready runs -> broker, `dispatched`
* retries.schedule_retries    failed/timed-out attempts -> next attempt
* recovery.*                  lost workers, lost messages, overdue runs
"""
