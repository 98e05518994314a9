"""functions-framework peer of bench/warm.py: the same hello handler behind a Flask-request adapter.

Run (production mode, i.e. without --debug, functions-framework serves with gunicorn):
    bench/.venvs/ff/bin/functions-framework --target=handler --source=bench/peers/ff_main.py --port=PORT
"""

import importlib.util
import json
import os

import flask

_spec = importlib.util.spec_from_file_location(
    "hello_main", os.path.join(os.path.dirname(os.path.abspath(__file__)), "hello", "main.py")
)
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
_handler = _mod.handler


class _Context:
    function_name = "hello"
    function_version = "1"
    memory_limit_in_mb = 128

    def __init__(self, request_id):
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self):
        return 30000


def handler(request: flask.Request):
    """Flask request -> event (the JSON body) -> the hello handler -> JSON response."""
    body = request.get_data()
    event = json.loads(body) if body.strip() else None
    result = _handler(event, _Context(request.headers.get("Function-Execution-Id", "")))
    return flask.Response(json.dumps(result), status=200, mimetype="application/json")
