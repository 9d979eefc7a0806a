"""The suite-wide check that secret values never leak (SPEC §8).

``SecretLeakGuard`` learns every secret value a test stores (through
``Secret.set_value``, the one way in) and watches the ways out: every response
the Django handler returns (API and admin), every log record, and every
INSERT or UPDATE sent to the database (so no AuditEntry, TaskRun, task or
history row holds a value in clear). tests/conftest.py installs one around
every test and fails the test at teardown if anything leaked.
"""

import json
import logging

from django.core.handlers.base import BaseHandler
from django.db.backends.utils import CursorWrapper

from system_app.models import Secret

WRITES = ("INSERT", "UPDATE")


class SecretLeakGuard(logging.Handler):
    def __init__(self):
        super().__init__(level=0)
        self.values = []
        self.leaks = []

    # What to look for -----------------------------------------------------

    def learn(self, value):
        if isinstance(value, str) and value and value not in self.values:
            self.values.append(value)

    def forms(self):
        """Each value as written and as JSON writes it (JSON columns, bodies)."""
        for value in self.values:
            yield value, value
            escaped = json.dumps(value)[1:-1]
            if escaped != value:
                yield value, escaped

    def check(self, where, text):
        if not self.values or text is None:
            return
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        for value, form in self.forms():
            if form in text:
                self.leaks.append(f"{where} contains the value of a secret ({value[:3]}…)")
                return

    # Where to look ----------------------------------------------------------

    def emit(self, record):
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is another test's concern
            text = str(record.msg)
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.check(f"log record {record.name}:{record.levelname}", text)

    def check_statement(self, sql, params):
        if not self.values or not isinstance(sql, str) or not sql.lstrip().upper().startswith(WRITES):
            return
        stack = [params]
        while stack:
            item = stack.pop()
            if isinstance(item, (list, tuple)):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, (str, bytes)):
                self.check(f"database write {sql[:60]!r}", item)

    def install(self, monkeypatch):
        guard = self
        set_value = Secret.set_value

        def learning_set_value(secret, value):
            set_value(secret, value)
            guard.learn(value)

        get_response = BaseHandler.get_response

        def watched_get_response(handler, request):
            response = get_response(handler, request)
            if not getattr(response, "streaming", False):
                guard.check(f"response to {request.method} {request.path}", response.content)
            return response

        execute, executemany = CursorWrapper._execute, CursorWrapper._executemany

        def watched_execute(cursor, sql, params, *args):
            guard.check_statement(sql, params)
            return execute(cursor, sql, params, *args)

        def watched_executemany(cursor, sql, param_list, *args):
            param_list = list(param_list)
            guard.check_statement(sql, param_list)
            return executemany(cursor, sql, param_list, *args)

        monkeypatch.setattr(Secret, "set_value", learning_set_value)
        monkeypatch.setattr(BaseHandler, "get_response", watched_get_response)
        monkeypatch.setattr(CursorWrapper, "_execute", watched_execute)
        monkeypatch.setattr(CursorWrapper, "_executemany", watched_executemany)
        logging.getLogger().addHandler(self)

    def uninstall(self):
        logging.getLogger().removeHandler(self)
