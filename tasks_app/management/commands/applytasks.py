"""manage.py applytasks FILE…: make the database's tasks match task files (SPEC §10).

    applytasks tasks.yaml                      create and update the file's tasks
    applytasks a.yaml b.json --source infra    several files need a --source
    applytasks tasks.yaml --prune              also delete tasks this source created earlier
    applytasks tasks.yaml --dry-run            print the plan only

See tasks_app.taskfiles for the format and the rules.
"""

from django.core.management.base import BaseCommand, CommandError

from tasks_app.taskfiles import TaskFileError, apply_files, default_source


class Command(BaseCommand):
    help = "Create, update (and with --prune delete) tasks so they match YAML or JSON task files."

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+", metavar="FILE", help="YAML or JSON file: a list of tasks")
        parser.add_argument("--source", help="name of this set of tasks (default: the file's base name)")
        parser.add_argument("--prune", action="store_true", help="delete tasks an earlier apply of this source created")
        parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")

    def handle(self, *args, files, source, prune, dry_run, **options):
        if source is None:
            if len(files) > 1:
                raise CommandError("--source is required with several files")
            source = default_source(files)
        source = source.strip()
        if not source or len(source) > 255:
            raise CommandError("--source must be 1-255 characters")
        try:
            report = apply_files(files, source, prune=prune, dry_run=dry_run)
        except TaskFileError as error:
            for line in error.lines:
                self.stderr.write(line)
            raise CommandError(f"{len(error.lines)} error(s); nothing was changed") from None
        for line in report.lines:
            self.stdout.write(line)
        self.stdout.write(report.summary)
