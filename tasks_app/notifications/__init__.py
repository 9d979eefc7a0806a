"""Alerts (SPEC §9): notification channels, the outbox and its delivery.

* models.py    Channel and Notification (the outbox); what each event sends
* delivery.py  one attempt of one notification: webhook (signed), Slack, e-mail
* explain.py   why a task is or is not running now

The rows are written by whoever records the cause (TaskRun.finish, the
dispatcher's recovery, late and misfire checks) in the same transaction; the
dispatcher sends them from its own thread pool (tasks_app.dispatcher.notifying).
"""
