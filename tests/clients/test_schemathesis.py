"""Property-based tests of the live API against its own OpenAPI schema.

Schemathesis reads ``/api/schema/`` from a running scheduler, generates
requests for every operation (valid ones and invalid ones, plus the boundary
cases of its coverage phase) and sends them authenticated with an admin API
key. Every answer must not be a 5xx, must use a status code and content type
the schema documents for that operation, and must match the documented body.

It runs the schemathesis command line rather than its pytest plugin: the
plugin reaches into pytest internals that pytest 9 changed. The run is
deterministic (the same cases every time, so a failure reproduces) and
bounded by ``--max-examples``; its report, with a curl command per failure,
is the assertion message.
"""

import subprocess
import sys

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# Operations that would pull the rug from under the run: revoking API keys
# (one of them is the key in use) and logging out.
EXCLUDED_OPERATIONS = ["auth_api_keys_destroy", "auth_logout_create"]
MAX_EXAMPLES = 10


def test_it_answers_every_operation_as_its_schema_says(live_scheduler, admin_api_key, tmp_path):
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{live_scheduler.url}/api/schema/?format=json",
        "--header",
        f"Authorization: Bearer {admin_api_key['key']}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
    ]
    for operation_id in EXCLUDED_OPERATIONS:
        command += ["--exclude-operation-id", operation_id]
    # In an empty directory: no stray schemathesis.toml is picked up, no report is left behind.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"{report}\n--- server log ---\n{live_scheduler.log_tail()}"
    assert "Tested: " in report, report
