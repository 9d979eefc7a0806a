from django.apps import AppConfig


class TasksAppConfig(AppConfig):
    name = "tasks_app"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Tasks"

    def ready(self):
        # The system app sits below this one and learns of tasks and runs only
        # through what is registered here (README: How it works).
        from system_app import dashboard, metrics, secrets, stats
        from tasks_app import dashboard as task_panels
        from tasks_app import stats as task_stats
        from tasks_app.models import Task
        from tasks_app.notifications.models import Channel

        stats.register("tasks", task_stats.system_stats)
        dashboard.register("tasks", task_panels.panels)
        metrics.DATABASE_COLLECTOR.add_reader("tasks", task_stats.metric_gauges)
        secrets.register_referrers("task", lambda name: [task.name for task in Task.objects.referring_to_secret(name)])
        secrets.register_referrers("channel", Channel.referring_to_secret)
