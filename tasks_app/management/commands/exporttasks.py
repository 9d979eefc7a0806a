"""manage.py exporttasks [--source S] [--format yaml|json]: write tasks in the
format applytasks reads, so export → apply is a no-op (SPEC §10)."""

from django.core.management.base import BaseCommand

from tasks_app.taskfiles import dump, export_tasks


class Command(BaseCommand):
    help = "Print tasks as a YAML (or JSON) task file that applytasks reads."

    def add_arguments(self, parser):
        parser.add_argument("--source", help="only the tasks of this applytasks source ('' for API-made ones)")
        parser.add_argument("--format", choices=("yaml", "json"), default="yaml")

    def handle(self, *args, source, format, **options):
        self.stdout.write(dump(export_tasks(source), format), ending="")
