"""One-shot runner for the bwrap peer of bench/cold_start.py.

Started fresh for every request: `bwrap ... python -I -S /var/runtime/runner.py main.handler`.
Reads the event (JSON) on stdin, loads the handler from /var/task, calls it once, writes the
return value as JSON on stdout and exits. Only stdlib; no site (-S), isolated mode (-I).
"""

import importlib
import json
import sys


class Context:
    function_name = "hello"
    function_version = "1"
    memory_limit_in_mb = 128
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self):
        return 30000


def main():
    module_name, _, func_name = sys.argv[1].rpartition(".")
    sys.path.insert(0, "/var/task")
    event = json.loads(sys.stdin.buffer.read() or b"null")
    handler = getattr(importlib.import_module(module_name), func_name)
    result = handler(event, Context())
    sys.stdout.buffer.write(json.dumps(result).encode())
    sys.stdout.flush()


main()
