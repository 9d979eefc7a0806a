"""The dispatcher (SPEC §2): plans due runs, gates them, enqueues them, retries, recovers.

Each step is an object ``step(now) -> int`` (rows handled in one batch; 0 when
it found no work) that ``rundispatcher`` runs, in this order, through
:class:`tasks_app.dispatcher.loop.Dispatcher`:

* recovery.FailoverStep        a dead dispatcher's dispatched runs -> sent again at once (PostgreSQL)
* recovery.RecoverWorkersStep  lost workers -> their running runs failed    (recovery rounds)
* recovery.ExpireStep          runs past their timeout -> `timeout`          (recovery rounds)
* notifying.LateStep           runs not started in time -> reported late    (recovery rounds)
* recovery.RedispatchStep      dispatched runs whose message was lost -> sent again (recovery rounds)
* retries.RetryStep            failed/timed-out attempts -> next attempt
* planning.PlanStep            due schedules -> runs (misfire, concurrency policies)
* gating.TriggerStep           dependency-only tasks whose upstreams completed -> runs
* gating.GateStep              pending runs whose dependencies are met -> enqueueable
* enqueueing.EnqueueStep       ready runs -> broker, `dispatched`
* retention.PruneStep          old history -> deleted                       (once a pass)
* notifying.Notifier           due notifications -> their channels         (once a pass)

The steps select rows and decide; the runs' status changes are TaskRun's
methods (tasks_app/models.py). A row that raises is pushed forward and
reported by its step (common.py), so it never blocks the rows behind it.
"""
