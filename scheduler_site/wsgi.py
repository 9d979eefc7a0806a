import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_site.settings")

try:
    application = get_wsgi_application()
except SystemExit as stop:
    # A configuration error (settings.py: one line, exit status 2) must stop
    # gunicorn, which gives up only on a worker that exits with 3 ("failed to
    # boot") and would otherwise start new workers, and print the line, forever.
    raise SystemExit(3 if stop.code == 2 else stop.code) from None
