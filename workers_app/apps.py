from django.apps import AppConfig


class WorkersAppConfig(AppConfig):
    name = "workers_app"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Workers"
