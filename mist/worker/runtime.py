"""The in-sandbox runtime: Lambda's Python contract on top of mist's frames (stdlib only).

Runs as pid 1 of the sandbox, after the zygote built it. Order of events on the channel:

    <- READY                         (sent by the zygote's setup code; the runtime then makes
                                      what does not depend on the function: streams, log handler,
                                      import finders)
    -> ASSIGN {function, handler...}  (the Worker attached the code before) the runtime calls
                                      `finish(assign)` (the function's environment), then imports
                                      the handler's module (the init phase)
    <- INIT {init_ms, error}          error = Lambda error dict when the import failed
    -> INVOKE {id, rid, t} + event    any number, possibly concurrent (up to `concurrency`);
                                      id: the call's id on this channel, rid: the request id
    <- LOG {id, s, t} + text          any number, as the handler writes them
    <- RESULT {id, ok, ...} + result  one per INVOKE

The channel's EOF ends the runtime. An instance whose init failed answers every INVOKE with
the init error. A handler calling `sys.exit(n)` ends the sandbox with status n.
"""

from __future__ import annotations

import array
import asyncio
import contextvars
import decimal
import fcntl
import inspect
import io
import json
import json.encoder
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
_getrusage, _RUSAGE_SELF, _RUSAGE_CHILDREN = resource.getrusage, resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN
_MAX_LINE = 64 * 1024


class Channel:
    """The sandbox's end of the socketpair: blocking frame reads, thread-safe frame writes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._decoder = protocol.FrameDecoder()
        self._frames: list[protocol.Frame] = []
        self._lock = threading.Lock()
        self._readable = select.poll()
        self._readable.register(sock.fileno(), select.POLLIN)

    def read(self) -> protocol.Frame | None:
        """The next frame; blocks until it comes. Sleeps in poll(POLLIN), not in recv: a
        thread asleep in a unix socket's recv is also woken when the peer reads what this
        end sent (the "write space" wake-up ignores what the sleeper waits for), so every
        RESULT the Worker read woke the idle sandbox once for nothing — a context switch,
        and on an idle CPU an inter-processor interrupt, per invocation. poll() is woken only
        for input (or hang-up)."""
        while not self._frames:
            self._readable.poll()
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
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
        self.send_frame(protocol.encode(kind, header, payload))

    def send_frame(self, frame: bytes) -> None:
        data = memoryview(frame)
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
        if not self._partial:
            return
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
        self.invoked_function_arn = f"arn:mist:lambda:local:{assign.get('tenant', 'default')}:function:{name}:{version}"
        self.log_group_name = f"/mist/{name}"
        self.log_stream_name = assign["log_stream"]
        self.client_context = None
        self.identity = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext(aws_request_id={self.aws_request_id!r}, function_name={self.function_name!r})"

    @classmethod
    def factory(cls, assign: dict) -> Callable[[str, float], "LambdaContext"]:
        """`factory(assign)(request_id, deadline)`: the same object as `LambdaContext(request_id,
        deadline, assign)`, with the fields that never change per instance set once."""
        fixed = vars(cls("", 0.0, assign)).copy()
        for name in ("aws_request_id", "request_id", "_deadline"):
            del fixed[name]

        def __init__(self: LambdaContext, request_id: str, deadline: float) -> None:
            self.aws_request_id = self.request_id = request_id
            self._deadline = deadline

        return type(cls.__name__, (cls,), {**fixed, "__init__": __init__, "__module__": cls.__module__})


_FIONREAD = 0x541B
_pending = array.array("i", [0])


def output_pending(fd: int | None) -> bool:
    """Whether OS-level output (of C code, subprocesses) waits in the output pipe, so the Worker
    reads the pipe before it takes the result (True when it cannot tell)."""
    if fd is None:
        return True
    try:
        fcntl.ioctl(fd, _FIONREAD, _pending, True)
    except OSError:
        return True
    return _pending[0] > 0


def result_frame(cid: object, error: dict | None, duration_ms: float, max_rss_mb: int, started: float,
                 ended: float, output: bool, body: bytes) -> bytes:
    """The RESULT frame; a success with a numeric call id skips the generic JSON encoder."""
    if error is None and type(cid) is str and cid.isdigit() and cid.isascii():
        head = ('{"id":"%s","ok":true,"error":null,"d":%r,"m":%d,"s":%r,"e":%r,"o":%s}' % (
            cid, duration_ms, max_rss_mb, started, ended, "true" if output else "false")).encode()
        return b"".join((protocol.PREFIX.pack(protocol.RESULT, len(head), len(body)), head, body))
    header = {"id": cid, "ok": error is None, "error": error, "d": duration_ms, "m": max_rss_mb,
              "s": started, "e": ended, "o": output}
    return protocol.encode(protocol.RESULT, header, body if error is None else b"")


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
_encoders = threading.local()


def _fast_encode(value: object) -> str:
    """`_encode(value)`, reusing one C encoder per thread instead of building one per call."""
    c_make_encoder = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    if c_make_encoder is None or isinstance(value, str):
        return _encode(value)
    try:
        markers, encoder = _encoders.state
    except AttributeError:
        markers = {}
        encoder = c_make_encoder(markers, _decimal_default, json.encoder.encode_basestring, None,
                                 ":", ",", False, False, True)
        _encoders.state = markers, encoder
    try:
        return "".join(encoder(value, 0))
    except BaseException:
        markers.clear()  # the circular-reference guard must start empty next time
        raise


def marshal(value: object) -> bytes:
    """The handler's return value as JSON bytes; raises ValueError with Lambda's message."""
    try:
        return _fast_encode(value).encode()
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
    """One loaded function inside one sandbox. Made (and installed) before ASSIGN, while a
    pool sandbox waits: only `configure(assign)` and `init()` are left for the cold start."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.assign: dict = {}
        self.output = _Output(channel)
        self.stdout = _Stream(self.output, "stdout", 1)
        self.stderr = _Stream(self.output, "stderr", 2)
        self.handler: Callable | None = None
        self.init_error: dict | None = None
        self.output_fd: int | None = None  # a private copy of the output pipe's write end
        self._context: Callable[[str, float], LambdaContext] | None = None

    def configure(self, assign: dict) -> None:
        self.assign = assign
        self._context = LambdaContext.factory(assign)

    def install(self) -> None:
        sys.stdout, sys.stderr = self.stdout, self.stderr  # type: ignore[assignment]
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(_LogHandler(self.output))
        if root.level != logging.WARNING:
            root.setLevel(logging.WARNING)

    @staticmethod
    def prepare_imports(paths: tuple[str, ...] = ("/var/task", "/opt/python")) -> None:
        """The import system's finders for the code's directories, made now (as the first
        import would make them: the path hooks in order), so the handler's import does not.
        They read their directory at their first use, after the code is attached."""
        import importlib.machinery

        for path in paths:
            importlib.machinery.PathFinder._path_importer_cache(path)  # type: ignore[attr-defined]

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
        maxrss = _getrusage(_RUSAGE_SELF).ru_maxrss + _getrusage(_RUSAGE_CHILDREN).ru_maxrss
        self.channel.send_frame(result_frame(cid, error, duration, -(-maxrss // 1024), wall0, time.time(),
                                             output_pending(self.output_fd), body))

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
        context = self._context(rid, time.monotonic() + timeout_ms / 1000)  # type: ignore[misc]
        event = _loads(payload) if payload else None
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


_decode = json.JSONDecoder().decode
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def _loads(payload: bytes) -> object:
    """json.loads(payload), without its encoding detection for plain UTF-8."""
    if b"\x00" in payload[:4] or payload.startswith(_BOMS):
        return json.loads(payload)
    return _decode(payload.decode("utf-8", "surrogatepass"))


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


class Steps:
    """The cold start's breakdown: `mark(step)` as each step ends; `durations()` in ms."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()  # CLOCK_MONOTONIC: comparable with the Worker's clock
        self.faults0 = _getrusage(_RUSAGE_SELF).ru_minflt
        self._marks: list[tuple[str, float]] = []

    def page_faults(self) -> int:
        return _getrusage(_RUSAGE_SELF).ru_minflt - self.faults0

    def mark(self, step: str) -> None:
        self._marks.append((step, time.perf_counter()))

    def durations(self) -> dict[str, float]:
        out: dict[str, float] = {}
        last = self.t0
        for step, t in self._marks:
            out[step] = round((t - last) * 1000, 3)
            last = t
        return out


def main(sock: socket.socket, finish: Callable[[dict, Callable[[str], None]], None]) -> None:
    """Wait for ASSIGN, finish the sandbox, load the function, serve invocations until EOF."""
    channel = Channel(sock)
    instance = Instance(channel)  # what does not depend on the function, done while waiting
    try:
        instance.output_fd = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        pass
    instance.install()
    instance.prepare_imports()
    frame = channel.read()
    while frame is not None and frame.kind != protocol.ASSIGN:
        frame = channel.read()
    if frame is None:
        os._exit(0)
    steps = Steps()
    assign = frame.header
    try:
        finish(assign, steps.mark)
    except BaseException:  # noqa: BLE001 - reported to the Worker as a host failure
        channel.send(protocol.FAILED, {"error": traceback.format_exc()})
        os._exit(70)
    instance.configure(assign)
    steps.mark("runtime")
    init_ms = instance.init()
    steps.mark("import")
    channel.send(protocol.INIT, {"init_ms": init_ms, "error": instance.init_error, "t0": steps.t0,
                                 "steps": steps.durations(), "page_faults": steps.page_faults()})
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


def warm_up(rounds: int = 16) -> None:
    """Run the invocation path a few times on a throwaway socketpair, in the zygote before it
    forks. Python 3.11 rewrites bytecode in place as it runs (warm-up counters, then
    specialized instructions), so code run for the first time in a sandbox writes to, and
    un-shares, the pages of its code objects; code already specialized here mostly does not.
    Leaves no state behind (sys.stdout, logging and the environment are untouched)."""
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        channel = Channel(a)
        assign = {"function_name": "warm-up", "version": 0, "handler": "warm_up.handler", "memory_mb": 128,
                  "log_stream": "", "concurrency": 1}
        instance = Instance(channel)
        instance.configure(assign)
        instance.output_fd = w
        log_handler = _LogHandler(instance.output)
        record = logging.LogRecord("warm-up", logging.WARNING, __file__, 1, "%s", ("line",), None)

        def handler(event: object, context: LambdaContext) -> object:
            instance.stdout.write("a line\nand a partial one")
            log_handler.emit(record)
            context.get_remaining_time_in_millis()
            return {"hello": "world", "n": [1, 2.5, None, True, "é"]}

        instance.handler = handler
        b.setblocking(False)
        for i in range(rounds):
            b.sendall(protocol.encode_invoke(str(i + 1), "warm-up", 3000, b'{"key": "value", "n": 1}'))
            frame = channel.read()
            if frame is not None and frame.kind == protocol.INVOKE:
                instance.run_sync(*_invocation(frame))
            while True:  # discard what the handler sent (LOG frames, the RESULT)
                try:
                    b.recv(65536)
                except BlockingIOError:
                    break
        _loads(b'{"a": [1, 2]}')
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()
