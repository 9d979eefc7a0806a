from django.apps import AppConfig


class SystemAppConfig(AppConfig):
    name = "system_app"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from system_app import checks  # noqa: F401  (registers the system checks)
