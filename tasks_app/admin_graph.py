"""Two read-only views of many tasks at once, for the admin.

* ``dependency_graph(task)``: the task's upstreams and downstreams (up to
  GRAPH_DEPTH steps each way), each with the status of its latest run, drawn
  as an SVG on the server: no script, nothing loaded from elsewhere, and the
  same picture in any browser. A fixed number of queries: one per step of the
  walk each way, one for the nodes.
* ``run_grid(tasks, runs)``: tasks × their last N runs, coloured by status,
  as Airflow's grid view. One query for the tasks and one for all their runs
  (a UNION ALL of one index-ordered LIMIT per task, so each task costs an
  index range scan of N entries, however many runs it has).
"""

from django.db import connection
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from tasks_app.models import RunStatus, Task, TaskDependency, TaskRun

GRAPH_DEPTH = 3
GRAPH_MAX_NODES = 60
NODE_WIDTH, NODE_HEIGHT = 190, 40
COLUMN_GAP, ROW_GAP, MARGIN = 56, 14, 8
NAME_CHARS = 26

GRID_MAX_TASKS = 100
GRID_DEFAULT_RUNS = 25
GRID_MAX_RUNS = 50

# Stroke colours of the graph's nodes; the grid uses the CSS classes
# run-<status> of static/scheduler/admin_ux.css (no inline styles: CSP).
STATUS_COLOURS = {
    RunStatus.COMPLETED: "#1a7f37",
    RunStatus.FAILED: "#cf222e",
    RunStatus.TIMEOUT: "#cf222e",
    RunStatus.RUNNING: "#0969da",
    RunStatus.DISPATCHED: "#54aeff",
    RunStatus.PENDING: "#8c959f",
    RunStatus.CANCELLED: "#9a6700",
    RunStatus.SKIPPED: "#d0d7de",
}
NO_RUN_COLOUR = "#d0d7de"


def latest_status_subquery():
    from django.db.models import OuterRef, Subquery

    # run_task_newest_idx: one index probe per task.
    newest = TaskRun.objects.filter(task_id=OuterRef("pk")).order_by("-scheduled_at", "-id").values("status")[:1]
    return Subquery(newest)


# Dependency graph ------------------------------------------------------------


def _walk(start_id, column, other):
    """Ids reachable from ``start_id`` along TaskDependency (``column`` → ``other``),
    one query per step, and the edges met (as (upstream, downstream) pairs)."""
    seen, frontier, edges = {start_id}, {start_id}, set()
    for _step in range(GRAPH_DEPTH):
        if not frontier or len(seen) >= GRAPH_MAX_NODES:
            break
        pairs = TaskDependency.objects.filter(**{f"{column}__in": frontier}).values_list(column, other)
        found = set()
        for near, far in pairs:
            if len(seen) + len(found) >= GRAPH_MAX_NODES and far not in seen and far not in found:
                continue
            edges.add((far, near) if column == "task_id" else (near, far))
            if far not in seen:
                found.add(far)
        seen |= found
        frontier = found
    return seen, edges


def graph_data(task):
    """Nodes (id, name, status, latest run status, layer, row) and edges of the
    task's neighbourhood; ``None`` when it has no dependencies either way."""
    upstream_ids, upstream_edges = _walk(task.pk, "task_id", "depends_on_id")
    downstream_ids, downstream_edges = _walk(task.pk, "depends_on_id", "task_id")
    ids = upstream_ids | downstream_ids
    if len(ids) == 1:
        return None
    edges = upstream_edges | downstream_edges
    rows = (
        Task.objects.filter(pk__in=ids)
        .annotate(latest=latest_status_subquery())
        .values_list("pk", "name", "status", "latest")
    )
    nodes = {pk: {"id": pk, "name": name, "status": status, "latest": latest} for pk, name, status, latest in rows}
    edges = {(a, b) for a, b in edges if a in nodes and b in nodes}
    # Layers: the longest path from a source, so every edge points right.
    layer = dict.fromkeys(nodes, 0)
    for _ in range(len(nodes)):
        changed = False
        for upstream, downstream in edges:
            if layer[downstream] < layer[upstream] + 1:
                layer[downstream] = layer[upstream] + 1
                changed = True
        if not changed:
            break
    columns = {}
    for node in sorted(nodes.values(), key=lambda n: (n["id"] != task.pk, n["name"])):
        node["layer"] = layer[node["id"]]
        node["row"] = len(columns.setdefault(node["layer"], []))
        columns[node["layer"]].append(node)
    return {"focus": task.pk, "nodes": nodes, "edges": sorted(edges), "columns": columns}


def _position(node):
    x = MARGIN + node["layer"] * (NODE_WIDTH + COLUMN_GAP)
    y = MARGIN + node["row"] * (NODE_HEIGHT + ROW_GAP)
    return x, y


def _short(name):
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def render_graph(task):
    """The SVG of ``graph_data(task)``, or "" when the task has no dependencies."""
    data = graph_data(task)
    if data is None:
        return ""
    nodes, columns = data["nodes"], data["columns"]
    width = MARGIN * 2 + len(columns) * NODE_WIDTH + (len(columns) - 1) * COLUMN_GAP
    height = MARGIN * 2 + max(len(c) for c in columns.values()) * (NODE_HEIGHT + ROW_GAP) - ROW_GAP
    paths = []
    for upstream, downstream in data["edges"]:
        x1, y1 = _position(nodes[upstream])
        x2, y2 = _position(nodes[downstream])
        x1, y1, y2 = x1 + NODE_WIDTH, y1 + NODE_HEIGHT / 2, y2 + NODE_HEIGHT / 2
        bend = (x2 - x1) / 2
        paths.append(
            (f"M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} {x2 - bend:.0f},{y2:.0f} {x2 - 6:.0f},{y2:.0f}", upstream)
        )
    edge_html = format_html_join(
        "",
        '<path class="graph-edge" d="{}" fill="none" stroke="#8c959f" stroke-width="1.5" '
        'marker-end="url(#graph-arrow)" data-from="{}"></path>',
        paths,
    )
    node_html = format_html_join("", "{}", ((_node_svg(node, node["id"] == data["focus"]),) for node in nodes.values()))
    return format_html(
        '<svg class="dependency-graph" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" '
        'viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<defs><marker id="graph-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8c959f"></path></marker></defs>'
        "{}{}</svg>",
        width,
        height,
        width,
        height,
        f"Dependencies of {task.name}: upstream tasks on the left, downstream tasks on the right",
        edge_html,
        node_html,
    )


def _node_svg(node, focus):
    x, y = _position(node)
    latest = node["latest"]
    colour = STATUS_COLOURS.get(latest, NO_RUN_COLOUR)
    label = RunStatus(latest).label.lower() if latest else "no runs yet"
    if node["status"] == "paused":
        label += " · paused"
    return format_html(
        '<a href="{}" class="graph-node{}" data-task="{}" data-status="{}"><title>{} — latest run: {}</title>'
        '<rect x="{}" y="{}" width="{}" height="{}" rx="6" fill="{}" stroke="{}" stroke-width="{}"></rect>'
        '<rect x="{}" y="{}" width="6" height="{}" rx="2" fill="{}"></rect>'
        '<text x="{}" y="{}" font-size="12" font-weight="{}" fill="#1f2328">{}</text>'
        '<text x="{}" y="{}" font-size="10.5" fill="#57606a">{}</text></a>',
        reverse("admin:tasks_app_task_change", args=[node["id"]]),
        " graph-focus" if focus else "",
        node["id"],
        latest or "none",
        node["name"],
        label,
        x,
        y,
        NODE_WIDTH,
        NODE_HEIGHT,
        "#f6f8fa" if focus else "#ffffff",
        colour,
        3 if focus else 1.5,
        x + 4,
        y + 6,
        NODE_HEIGHT - 12,
        colour,
        x + 16,
        y + 17,
        "bold" if focus else "normal",
        _short(node["name"]),
        x + 16,
        y + 32,
        label,
    )


# Run grid ----------------------------------------------------------------------


def latest_runs(task_ids, count):
    """{task_id: [runs, newest first]} for the last ``count`` runs of each task,
    in one query: a UNION ALL of one ``ORDER BY … LIMIT`` per task (Django's
    union() cannot slice its parts on SQLite, hence the SQL)."""
    if not task_ids:
        return {}
    table = connection.ops.quote_name(TaskRun._meta.db_table)
    columns = "id, task_id, status, trigger, retry_count, scheduled_at, started_at, completed_at"
    part = (
        f"SELECT * FROM (SELECT {columns} FROM {table} WHERE task_id = %s "
        "ORDER BY scheduled_at DESC, id DESC LIMIT %s) AS r{n}"
    )
    sql = " UNION ALL ".join(part.format(n=n) for n in range(len(task_ids)))
    params = [value for task_id in task_ids for value in (task_id, count)]
    runs = {task_id: [] for task_id in task_ids}
    for run in TaskRun.objects.raw(sql, params):
        runs[run.task_id].append(run)
    for rows in runs.values():
        rows.sort(key=lambda run: (run.scheduled_at, run.pk), reverse=True)
    return runs


def run_grid(tasks, count):
    """Rows of (task, cells) with the oldest of the last ``count`` runs on the
    left and the newest on the right; missing runs are empty cells on the left."""
    runs = latest_runs([task.pk for task in tasks], count)
    rows = []
    for task in tasks:
        newest_first = runs.get(task.pk, [])
        cells = [None] * (count - len(newest_first)) + list(reversed(newest_first))
        rows.append({"task": task, "cells": cells})
    return rows


def grid_cell(run):
    if run is None:
        return mark_safe('<span class="grid-cell run-none" aria-hidden="true"></span>')
    return format_html(
        '<a class="grid-cell run-{}" href="{}" title="#{} {} · {} · {} UTC"></a>',
        run.status,
        reverse("admin:tasks_app_taskrun_change", args=[run.pk]),
        run.pk,
        RunStatus(run.status).label.lower(),
        run.trigger,
        run.scheduled_at.strftime("%Y-%m-%d %H:%M:%S"),
    )
