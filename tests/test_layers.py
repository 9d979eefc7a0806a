"""The apps' dependency direction (README: How it works), kept by a test.

Layers from bottom to top: system_app, tasks_app, workers_app. A module
imports only its own app and the apps below it; the composition roots
(scheduler_site, management commands, tests) may wire any of them together.
Every import counts, at the top of a module or inside a function, and so do
modules named in ``import_module``/``import_string``/``__import__`` and models
in ``apps.get_model``. A lower app learns of an upper one only through a
registry it defines and the upper app fills in its AppConfig.ready().
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("system_app", "tasks_app", "workers_app")
COMPOSITION_ROOTS = ("management/commands/",)
DYNAMIC_IMPORTS = {"import_module", "import_string", "__import__"}


def imported_modules(source):
    """(line, module) of every module ``source`` imports or names for import."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in DYNAMIC_IMPORTS or name == "get_model":
                yield node.lineno, str(node.args[0].value)


def violations(app, source, where):
    """Imports in ``source`` (a module of ``app``) of an app above ``app``."""
    above = LAYERS[LAYERS.index(app) + 1 :]
    return [
        f"{where}:{line}: {app} imports {module}"
        for line, module in sorted(imported_modules(source))
        if module.split(".")[0] in above
    ]


def app_modules():
    for app in LAYERS:
        for path in sorted((ROOT / app).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if not any(root in relative for root in COMPOSITION_ROOTS):
                yield app, path, relative


def test_it_keeps_every_app_to_its_own_layer_and_those_below():
    found = [
        problem for app, path, relative in app_modules() for problem in violations(app, path.read_text(), relative)
    ]
    assert not found, "imports against the layers (system_app → tasks_app → workers_app):\n" + "\n".join(found)


def test_it_scans_every_app():
    scanned = {app for app, _path, _relative in app_modules()}
    assert scanned == set(LAYERS)


def test_it_sees_an_upward_import_wherever_it_is():
    source = (
        "import os\n"
        "from system_app import audit\n"
        "def f():\n"
        "    from workers_app.models import Worker\n"
        "    import tasks_app.models\n"
        "    return importlib.import_module('workers_app.actors'), apps.get_model('workers_app', 'Worker')\n"
    )
    assert violations("system_app", source, "x.py") == [
        "x.py:4: system_app imports workers_app.models",
        "x.py:5: system_app imports tasks_app.models",
        "x.py:6: system_app imports workers_app",
        "x.py:6: system_app imports workers_app.actors",
    ]
    assert violations("workers_app", source, "x.py") == []
