from django.apps import AppConfig


class SystemAppConfig(AppConfig):
    name = "system_app"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "System"

    def ready(self):
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save

        from system_app import checks, metrics, secrets  # noqa: F401  (checks registers the system checks)
        from system_app.logins import end_logins_of_inactive_user

        post_save.connect(end_logins_of_inactive_user, sender=get_user_model(), dispatch_uid="end_logins_of_inactive")

        # Log records written while a worker holds resolved secrets are masked.
        secrets.install_log_masking()

        # The web process serves the default registry at /metrics; the gauges
        # read from the database are computed there, at scrape time.
        metrics.register_database_collector()
