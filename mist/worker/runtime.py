"""The in-sandbox runtime: Lambda's Python contract on top of mist's frames (stdlib only).

Runs as pid 1 of the sandbox, after the zygote built it. Order of events on the channel:

    <- READY                         (sent by the zygote's setup code)
    -> ASSIGN {function, handler...}  the runtime calls `finish(assign)` (pivot, drop privileges,
                                      seccomp), then imports the handler's module (the init phase)
    <- INIT {init_ms, error}          error = Lambda error dict when the import failed
    -> INVOKE {id, rid, t} + event    any number, possibly concurrent (up to `concurrency`);
                                      id: the call's id on this channel, rid: the request id
    <- LOG {id, s, t} + text          any number, as the handler writes them
    <- RESULT {id, ok, ...} + result  one per INVOKE

The channel's EOF ends the runtime. An instance whose init failed answers every INVOKE with
the init error. A handler calling `sys.exit(n)` ends the sandbox with status n.
"""

from __future__ import annotations

import asyncio
import contextvars
import decimal
import inspect
import io
import json
import logging
import os
import resource
import select
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from mist.worker import protocol

# The call id (the frame's "id") of the invocation the current thread or task is running.
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("mist_call_id", default=None)
_RUNTIME_FILES = {__file__}
_MAX_LINE = 64 * 1024


class Channel:
    """The sandbox's end of the socketpair: blocking frame reads, thread-safe frame writes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._decoder = protocol.FrameDecoder()
        self._frames: list[protocol.Frame] = []
        self._lock = threading.Lock()

    def read(self) -> protocol.Frame | None:
        while not self._frames:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                select.select([self.sock], [], [])
                continue
            if not data:
                return None
            self._frames.extend(self._decoder.feed(data))
        return self._frames.pop(0)

    def take_pending(self) -> list[protocol.Frame]:
        """Frames already read but not yet handed out (before switching to the event loop)."""
        frames, self._frames = self._frames, []
        return frames

    def feed(self, data: bytes) -> list[protocol.Frame]:
        return self._decoder.feed(data)

    def send(self, kind: int, header: dict, payload: bytes = b"") -> None:
        data = memoryview(protocol.encode(kind, header, payload))
        with self._lock:
            while data:
                try:
                    sent = self.sock.send(data)
                except BlockingIOError:
                    select.select([], [self.sock], [])
                    continue
                data = data[sent:]


# -- output capture ---------------------------------------------------------------------------

class _Output:
    """Per-invocation attribution of output: `emit(call_id, stream, line)` sends a LOG frame."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.inflight: dict[str, str] = {}  # call id -> request id

    def call_id(self) -> str:
        """The current invocation, or the only one in flight (output from a user's own thread)."""
        cid = _current.get()
        if cid is None and len(self.inflight) == 1:
            return next(iter(self.inflight))
        return cid or ""

    def emit(self, cid: str, stream: str, text: str) -> None:
        self.channel.send(protocol.LOG, {"id": cid, "s": stream, "t": time.time()}, text.encode("utf-8", "replace"))


class _Stream(io.TextIOBase):
    """sys.stdout / sys.stderr inside the sandbox: line-buffered, one LOG frame per line."""

    def __init__(self, output: _Output, name: str, fd: int) -> None:
        super().__init__()
        self._output = output
        self._name = name
        self._fd = fd
        self._partial: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    @property
    def buffer(self) -> "_Bytes":
        return _Bytes(self)

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        cid = self._output.call_id()
        with self._lock:
            text = self._partial.pop(cid, "") + s
            *lines, rest = text.split("\n")
            if len(rest) > _MAX_LINE:
                lines.append(rest)
                rest = ""
            if rest:
                self._partial[cid] = rest
        for line in lines:
            self._output.emit(cid, self._name, line)
        return len(s)

    def flush_call(self, cid: str) -> None:
        with self._lock:
            rest = self._partial.pop(cid, "")
        if rest:
            self._output.emit(cid, self._name, rest)


class _Bytes:
    """`sys.stdout.buffer`: bytes written to it are decoded and captured like text."""

    def __init__(self, stream: _Stream) -> None:
        self._stream = stream

    def write(self, data: bytes) -> int:
        self._stream.write(bytes(data).decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        pass


class _LogHandler(logging.Handler):
    """Lambda's root handler: `[LEVEL]\\t<iso time>\\t<request id>\\t<message>`."""

    def __init__(self, output: _Output) -> None:
        super().__init__()
        self._output = output
        formatter = logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s", "%Y-%m-%dT%H:%M:%S"
        )
        formatter.converter = time.gmtime
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            cid = self._output.call_id()
            record.aws_request_id = self._output.inflight.get(cid, "")
            self._output.emit(cid, "log", self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the handler
            self.handleError(record)


# -- Lambda's context and errors ---------------------------------------------------------------

class LambdaContext:
    def __init__(self, request_id: str, deadline: float, assign: dict) -> None:
        name, version = assign["function_name"], str(assign["version"])
        self.aws_request_id = request_id
        self.request_id = request_id
        self.function_name = name
        self.function_version = version
        self.memory_limit_in_mb = str(assign["memory_mb"])
        self.invoked_function_arn = f"arn:mist:lambda:local:000000000000:function:{name}:{version}"
        self.log_group_name = f"/mist/{name}"
        self.log_stream_name = assign["log_stream"]
        self.client_context = None
        self.identity = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext(aws_request_id={self.aws_request_id!r}, function_name={self.function_name!r})"


def _error(error_type: str, message: str, trace: list[str] | None = None) -> dict:
    return {"errorType": error_type, "errorMessage": message, "stackTrace": trace or []}


def user_stack(exc: BaseException) -> list[str]:
    """The exception's frames without the runtime's own, as Lambda prints them."""
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(exc.__traceback__)
              if f.filename not in _RUNTIME_FILES]
    return traceback.format_list(frames)  # from tuples: no 3.11 carets, as Lambda prints them


def exception_error(exc: BaseException) -> dict:
    return _error(type(exc).__name__, str(exc), user_stack(exc))


def _decimal_default(obj: object) -> object:
    if isinstance(obj, decimal.Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_encode = json.JSONEncoder(default=_decimal_default, ensure_ascii=False, separators=(",", ":")).encode


def marshal(value: object) -> bytes:
    """The handler's return value as JSON bytes; raises ValueError with Lambda's message."""
    try:
        return _encode(value).encode()
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise ValueError(f"Unable to marshal response: {exc}") from None


def load_handler(handler: str) -> tuple[Callable | None, dict | None]:
    """Import the handler's module. Returns (function, None) or (None, Lambda init error)."""
    modname, _, fname = handler.rpartition(".")
    if not modname or not fname:
        return None, _error(
            "Runtime.MalformedHandlerName",
            f"Bad handler '{handler}': not enough values to unpack (expected 2, got 1)",
        )
    modname = modname.replace("/", ".")
    try:
        module = __import__(modname, fromlist=["_"])
    except ImportError as exc:
        return None, _error(
            "Runtime.ImportModuleError", f"Unable to import module '{modname}': {exc}", user_stack(exc)
        )
    except SyntaxError as exc:
        trace = [f'  File "{exc.filename}" Line {exc.lineno}\n    {(exc.text or "").strip()}\n']
        return None, _error(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{modname}': {exc}", trace
        )
    except Exception as exc:  # noqa: BLE001 - any init failure is the user's error to report
        return None, exception_error(exc)
    function = getattr(module, fname, None)
    if function is None:
        return None, _error("Runtime.HandlerNotFound", f"Handler '{fname}' missing on module '{modname}'")
    return function, None


# -- the instance -------------------------------------------------------------------------------

class Instance:
    """One loaded function inside one sandbox."""

    def __init__(self, channel: Channel, assign: dict) -> None:
        self.channel = channel
        self.assign = assign
        self.output = _Output(channel)
        self.stdout = _Stream(self.output, "stdout", 1)
        self.stderr = _Stream(self.output, "stderr", 2)
        self.handler: Callable | None = None
        self.init_error: dict | None = None

    def install(self) -> None:
        sys.stdout, sys.stderr = self.stdout, self.stderr  # type: ignore[assignment]
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(_LogHandler(self.output))
        root.setLevel(logging.WARNING)

    def init(self) -> float:
        t0 = time.perf_counter()
        self.handler, self.init_error = load_handler(self.assign["handler"])
        init_ms = (time.perf_counter() - t0) * 1000
        self.stdout.flush_call("")
        self.stderr.flush_call("")
        return init_ms

    def _begin(self, cid: str, rid: str) -> tuple[contextvars.Token, float, float]:
        self.output.inflight[cid] = rid
        return _current.set(cid), time.time(), time.perf_counter()

    def _finish(self, cid: str, token: contextvars.Token, wall0: float, t0: float,
                value: object, error: dict | None) -> None:
        duration = (time.perf_counter() - t0) * 1000
        body = b"null"
        if error is None:
            try:
                body = marshal(value)
            except ValueError as exc:
                error = _error("Runtime.MarshalError", str(exc))
        self.stdout.flush_call(cid)
        self.stderr.flush_call(cid)
        _current.reset(token)
        self.output.inflight.pop(cid, None)
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(
            resource.RUSAGE_CHILDREN
        ).ru_maxrss
        header = {
            "id": cid, "ok": error is None, "error": error, "d": duration,
            "m": -(-maxrss // 1024), "s": wall0, "e": time.time(),
        }
        self.channel.send(protocol.RESULT, header, body if error is None else b"")

    def _exit(self, exc: SystemExit) -> None:
        code = exc.code
        if code is None:
            status = 0
        elif isinstance(code, int):
            status = code & 0xFF
        else:
            print(code, file=sys.stderr)
            status = 1
        for stream in (self.stdout, self.stderr):
            for cid in list(self.output.inflight):
                stream.flush_call(cid)
        os._exit(status)

    def _call(self, rid: str, timeout_ms: int, payload: bytes) -> object:
        context = LambdaContext(rid, time.monotonic() + timeout_ms / 1000, self.assign)
        event = json.loads(payload) if payload else None
        return self.handler(event, context)  # type: ignore[misc]

    def run_sync(self, cid: str, rid: str, timeout_ms: int, payload: bytes) -> None:
        token, wall0, t0 = self._begin(cid, rid)
        value, error = None, self.init_error
        if error is None:
            try:
                value = self._call(rid, timeout_ms, payload)
                if inspect.isawaitable(value):
                    value = asyncio.run(_await(value))
            except SystemExit as exc:
                self._exit(exc)
            except BaseException as exc:  # noqa: BLE001 - the user's error, reported
                error = exception_error(exc)
        self._finish(cid, token, wall0, t0, value, error)

    async def run_async(self, cid: str, rid: str, timeout_ms: int, payload: bytes) -> None:
        token, wall0, t0 = self._begin(cid, rid)
        value, error = None, self.init_error
        if error is None:
            try:
                value = self._call(rid, timeout_ms, payload)
                if inspect.isawaitable(value):
                    value = await value
            except SystemExit as exc:
                self._exit(exc)
            except BaseException as exc:  # noqa: BLE001 - the user's error, reported
                error = exception_error(exc)
        self._finish(cid, token, wall0, t0, value, error)


async def _await(value: object) -> object:
    return await value  # type: ignore[misc]


# -- serving loops ------------------------------------------------------------------------------

def _invocation(frame: protocol.Frame) -> tuple[str, str, int, bytes]:
    h = frame.header
    return h["id"], h["rid"], h["t"], frame.payload


def _serve_sync(channel: Channel, instance: Instance) -> None:
    while (frame := channel.read()) is not None:
        if frame.kind == protocol.INVOKE:
            instance.run_sync(*_invocation(frame))


def _serve_threads(channel: Channel, instance: Instance, workers: int) -> None:
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="handler") as pool:
        while (frame := channel.read()) is not None:
            if frame.kind == protocol.INVOKE:
                pool.submit(instance.run_sync, *_invocation(frame))
    os._exit(0)


def _serve_async(channel: Channel, instance: Instance) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    sock = channel.sock
    sock.setblocking(False)
    tasks: set[asyncio.Task] = set()

    def start(frame: protocol.Frame) -> None:
        if frame.kind == protocol.INVOKE:
            task = loop.create_task(instance.run_async(*_invocation(frame)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    for frame in channel.take_pending():
        start(frame)

    def readable() -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            loop.stop()
            return
        for frame in channel.feed(data):
            start(frame)

    loop.add_reader(sock.fileno(), readable)
    loop.run_forever()
    os._exit(0)


def main(sock: socket.socket, finish: Callable[[dict], None]) -> None:
    """Wait for ASSIGN, finish the sandbox, load the function, serve invocations until EOF."""
    channel = Channel(sock)
    frame = channel.read()
    while frame is not None and frame.kind != protocol.ASSIGN:
        frame = channel.read()
    if frame is None:
        os._exit(0)
    assign = frame.header
    try:
        finish(assign)
    except BaseException:  # noqa: BLE001 - reported to the Worker as a host failure
        channel.send(protocol.FAILED, {"error": traceback.format_exc()})
        os._exit(70)
    instance = Instance(channel, assign)
    instance.install()
    init_ms = instance.init()
    channel.send(protocol.INIT, {"init_ms": init_ms, "error": instance.init_error})
    handler = instance.handler
    is_async = handler is not None and (
        inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(getattr(handler, "__call__", None))
    )
    concurrency = max(1, int(assign.get("concurrency", 1)))
    if is_async:
        _serve_async(channel, instance)
    elif concurrency == 1:
        _serve_sync(channel, instance)
    else:
        _serve_threads(channel, instance, concurrency)
    os._exit(0)
