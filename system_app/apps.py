from django.apps import AppConfig


class SystemAppConfig(AppConfig):
    name = "system_app"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from system_app import checks, metrics  # noqa: F401  (checks registers the system checks)

        # The web process serves the default registry at /metrics; the gauges
        # read from the database are computed there, at scrape time.
        metrics.register_database_collector()
