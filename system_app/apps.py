from django.apps import AppConfig


class SystemAppConfig(AppConfig):
    name = "system_app"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "System"

    def ready(self):
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django.db.models.signals import m2m_changed, post_delete, post_save

        from system_app import checks, db, metrics, secrets  # noqa: F401  (checks registers the system checks, db a lookup)
        from system_app.logins import end_logins_of_inactive_user
        from system_app.principals import forget_principals

        post_save.connect(end_logins_of_inactive_user, sender=get_user_model(), dispatch_uid="end_logins_of_inactive")

        # What a token may do changed: the memory of principals forgets it.
        user_model = get_user_model()
        for signal, sender in (
            (post_save, user_model),
            (post_delete, user_model),
            (post_save, Group),
            (post_delete, Group),
            (m2m_changed, user_model.groups.through),
            (m2m_changed, user_model.user_permissions.through),
            (m2m_changed, Group.permissions.through),
        ):
            signal.connect(forget_principals, sender=sender, dispatch_uid=f"forget_principals_{signal}_{sender}")

        # Log records written while a worker holds resolved secrets are masked.
        secrets.install_log_masking()

        # The web process serves the default registry at /metrics; the gauges
        # read from the database are computed there, at scrape time.
        metrics.register_database_collector()
