"""manage.py prunehistory: delete old run history, events, audit entries and sent notifications once.

    prunehistory                 delete what retention allows, in batches
    prunehistory --dry-run       only count it
    prunehistory --run-days 7    override a setting for this run

The dispatcher already prunes on its own, an hour apart; this is for cron, a
one-off clean-up, or a database served by no dispatcher. See
tasks_app.dispatcher.retention for what goes and how.
"""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tasks_app.dispatcher import retention


class Command(BaseCommand):
    help = "Delete finished runs, events, audit entries and sent notifications past their retention, in batches."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
        parser.add_argument("--run-days", type=int, help="override RUN_RETENTION_DAYS")
        parser.add_argument("--keep-per-task", type=int, help="override RUN_RETENTION_KEEP_PER_TASK")
        parser.add_argument("--event-days", type=int, help="override EVENT_RETENTION_DAYS")
        parser.add_argument("--audit-days", type=int, help="override AUDIT_RETENTION_DAYS")
        parser.add_argument(
            "--batch-size", type=int, default=retention.BATCH_SIZE, help="ids per DELETE (default %(default)s)"
        )

    def handle(self, *args, dry_run, run_days, keep_per_task, event_days, audit_days, batch_size, **options):
        for name, value in (("--run-days", run_days), ("--event-days", event_days), ("--audit-days", audit_days)):
            if value is not None and value < 1:
                raise CommandError(f"{name} must be at least 1")
        if keep_per_task is not None and keep_per_task < 0:
            raise CommandError("--keep-per-task must be 0 or more")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        policy = retention.Retention.from_settings(
            run_days=run_days, keep_per_task=keep_per_task, event_days=event_days, audit_days=audit_days
        )
        now = timezone.now()
        if dry_run:
            counts = retention.count_prunable(now, policy)
            self.stdout.write(f"would delete: {_summary(counts)} ({policy.describe()})")
            return
        totals = retention.prune(now, policy, batch_size)
        retention.report(totals, policy, source="prunehistory")
        self.stdout.write(f"deleted: {_summary(totals)} ({policy.describe()})")


def _summary(counts):
    return " ".join(f"{kind}={counts[kind]}" for kind in retention.KINDS)
