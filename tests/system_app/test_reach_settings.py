"""The settings of what a task can reach (SPEC §3, §8): strict, one line naming the variable."""

import ipaddress

import pytest

from scheduler_site import env
from scheduler_site.env import ConfigError
from scheduler_site.settings import HTTP_EXECUTOR_BLOCKED_DEFAULT
from tests.system_app.test_settings import manage


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PYTHON_CALLABLE_MODULES", "myproject.jobs, my-project"),
        ("RUN_AS_USER", "no-such-user-here"),
        ("HTTP_EXECUTOR_BLOCKED_NETWORKS", "169.254.0.0/16,metadata"),
    ],
)
def test_it_stops_with_one_line_naming_the_variable(name, value):
    result = manage("check", **{name: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Configuration error: {name}:")


def test_it_reads_module_prefixes():
    assert env.env_modules("X", environ={"X": "myproject.jobs, reports"}) == ["myproject.jobs", "reports"]
    assert env.env_modules("X", environ={}) == []
    with pytest.raises(ConfigError, match="^X: 'a..b' is not a dotted module name"):
        env.env_modules("X", environ={"X": "a..b"})


def test_it_reads_run_as_user_by_name_or_uid():
    assert env.env_user("X", "nobody", environ={}) == "nobody"
    assert env.env_user("X", "nobody", environ={"X": "0"}) == "0"
    with pytest.raises(ConfigError, match="^X: no user"):
        env.env_user("X", "nobody", environ={"X": "99999999999999999999"})


def test_it_blocks_link_local_and_metadata_networks_by_default():
    networks = env.env_networks("X", environ={}, default=HTTP_EXECUTOR_BLOCKED_DEFAULT)
    assert ipaddress.ip_address("169.254.169.254") in networks[0]
    assert [str(network) for network in networks] == ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"]
    assert env.env_networks("X", environ={"X": ""}, default=HTTP_EXECUTOR_BLOCKED_DEFAULT) == []
