from django.apps import AppConfig


class WorkersAppConfig(AppConfig):
    name = "workers_app"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Workers"

    def ready(self):
        # The apps below this one learn of workers only through what is
        # registered here (README: How it works).
        from system_app import dashboard, metrics, stats
        from tasks_app.workers import WORKERS
        from workers_app import dashboard as worker_panels
        from workers_app import stats as worker_stats
        from workers_app.directory import Directory

        stats.register("workers", worker_stats.system_stats)
        dashboard.register("workers", worker_panels.panels)
        metrics.DATABASE_COLLECTOR.add_reader("workers", worker_stats.metric_gauges)
        WORKERS.register(Directory())
