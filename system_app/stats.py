"""Figures for /api/system/stats: each a single aggregate query.

The system app sits below the apps whose rows it counts, so it does not read
them itself: each app registers its sections in its AppConfig.ready()
(tasks_app.stats, workers_app.stats), and the answer is their union, shaped by
SystemStatsSerializer.
"""

from django.db.models import Count

# name → section(now) returning {key: figure}: filled by the apps' ready().
SECTIONS = {}


def register(name, section):
    """Add ``section(now)`` to the stats; a second registration of ``name`` replaces the first."""
    SECTIONS[name] = section


def count_by(queryset, field):
    """{value of ``field``: rows}, in one grouped query."""
    return dict(queryset.order_by().values_list(field).annotate(n=Count("id")).values_list(field, "n"))


def system_stats(now):
    stats = {"generated_at": now}
    for section in SECTIONS.values():
        stats.update(section(now))
    return stats


def all_of(counts, keys):
    """``counts`` with every one of ``keys``, zero when absent."""
    return {key: counts.get(key, 0) for key in keys}
