"""compose/: the Compose file parses, has every service, and documents every setting.

There is no Docker engine in the test environment, so the deployment is
checked statically: ``docker-compose config`` (Debian's docker-compose package,
installed by .ci/run) validates and renders the file with compose/.env.example
plus the two passwords and the key an operator must fill in, and the rendered
services are inspected.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.services import require

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose"
SCHEDULER_SERVICES = ("web", "dispatcher-a", "dispatcher-b", "worker")


# What an operator fills in when copying .env.example to .env (it ships them empty).
SECRETS = {
    "POSTGRES_PASSWORD": "test-postgres-password",
    "RABBITMQ_DEFAULT_PASS": "test-rabbitmq-password",
    "SECRET_KEY": "test-secret-key-" + "x" * 40,
}


def compose_config(**secrets):
    """``docker-compose config`` with .env.example; the shell's values override the file's."""
    executable = shutil.which("docker-compose")
    if executable is None:
        require("docker-compose is not installed (apt-get install docker-compose)")
    environ = {key: value for key, value in os.environ.items() if key not in SECRETS}
    environ.update(secrets)
    return subprocess.run(
        [executable, "--env-file", str(COMPOSE / ".env.example"), "-f", str(COMPOSE / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def rendered():
    result = compose_config(**SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_it_refuses_to_render_without_the_passwords_and_the_secret_key():
    result = compose_config()
    assert result.returncode != 0
    assert re.search(r"set (POSTGRES_PASSWORD|RABBITMQ_DEFAULT_PASS|SECRET_KEY) in compose/\.env", result.stderr)


def test_it_renders_every_service(rendered):
    assert set(rendered["services"]) == {*SCHEDULER_SERVICES, "postgres", "rabbitmq", "prometheus"}
    assert rendered["services"]["postgres"]["image"] == "postgres:15"
    assert rendered["services"]["rabbitmq"]["image"] == "rabbitmq:3-management"
    for name in ("postgres", "rabbitmq", "web"):
        assert rendered["services"][name]["healthcheck"]["test"], name


def test_it_points_every_scheduler_process_at_postgres_and_rabbitmq(rendered):
    for name in SCHEDULER_SERVICES:
        environment = rendered["services"][name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://"), name
        assert "@postgres:5432/" in environment["DATABASE_URL"], name
        assert environment["BROKER_URL"].startswith("amqp://"), name
        assert "@rabbitmq:5672/" in environment["BROKER_URL"], name
        assert len(environment["SECRET_KEY"]) >= 32, name
        assert environment["METRICS_BIND_ADDRESS"] == "0.0.0.0", name
        # Scaled workers must not share one id: each registers as hostname-pid.
        assert "WORKER_ID" not in environment, name


def test_it_runs_the_right_command_in_each_scheduler_service(rendered):
    services = rendered["services"]
    web = " ".join(services["web"]["command"])
    assert web.index("manage.py migrate") < web.index("gunicorn scheduler_site.wsgi")
    assert "/health" in " ".join(services["web"]["healthcheck"]["test"])
    for name in ("dispatcher-a", "dispatcher-b"):
        assert services[name]["command"] == ["python", "manage.py", "rundispatcher"]
        assert services[name]["depends_on"]["web"]["condition"] == "service_healthy"
    worker = services["worker"]
    command = worker["command"] if isinstance(worker["command"], str) else " ".join(worker["command"])
    assert "rundramatiq --processes 1 --threads 16" in command
    # --scale worker=N needs a service without a fixed name or published port.
    assert "container_name" not in worker and "ports" not in worker


def test_it_scrapes_every_metrics_endpoint(rendered):
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    static = [group for job in jobs.values() for group in job.get("static_configs", [])]
    targets = {target for group in static for target in group["targets"]}
    assert {"web:8000", "dispatcher-a:9108", "dispatcher-b:9108"} <= targets
    # Every replica of `--scale worker=N`, found through Docker's DNS.
    (workers,) = jobs["worker"]["dns_sd_configs"]
    assert workers["names"] == ["worker"] and workers["type"] == "A" and workers["port"] == 9109
    environment = rendered["services"]["worker"]["environment"]
    assert environment["DISPATCHER_METRICS_PORT"] == "9108" and environment["WORKER_METRICS_PORT"] == "9109"


def test_it_documents_every_setting_of_the_readme_in_the_env_example():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    settings = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", table, flags=re.MULTILINE)
    assert "DATABASE_URL" in settings and "ENABLED_EXECUTORS" in settings
    example = (COMPOSE / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert not [name for name in settings if name not in documented]
    # ...and every variable the Compose file reads.
    compose_variables = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", (COMPOSE / "docker-compose.yml").read_text()))
    assert not sorted(compose_variables - documented)
