"""The ASGI front of Aerostack: connections live in an event loop, the synchronous Django code in lanes.

Why (docs/architecture.md has the measurements): a thread-per-connection server ties a thread to every idle
keep-alive connection, every client that trickles its headers or body and every SSE stream, so a few slow
clients or slow tool calls stop the whole process. Here the event loop (uvicorn, under gunicorn) owns every
socket; a request reaches a thread only once its headers and whole body have arrived, and the thread is given
back as soon as Django has produced the response (or, for a streamed response, each next chunk of it).

Each request is served by a *lane*: a bounded pool of reusable threads. The threads keep their per-thread
state between requests (Django's persistent database connections, the gateway's keep-alive upstream
connections), unlike Django's own ASGI handler, which starts a thread per request. A lane admits at most
``threads + queue`` requests at a time; beyond that it answers at once with the lane's ``busy`` response (for
the gateway a JSON-RPC error), so a request never waits behind an unbounded queue.

The Django code runs unchanged through its WSGI entry point (``aerostack.wsgi.application``): the same
handlers, middleware and views serve the dashboard, the API and the gateway under WSGI servers too.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Headers = list[tuple[bytes, bytes]]
# What a lane answers when it is full: status, headers and body for the request body it was given.
BusyAnswer = Callable[[bytes], tuple[int, Headers, bytes]]
# A response whose body is produced on the event loop, not in a lane (a long-lived stream that waits for
# messages): a WSGI response object with a ``loop_stream`` attribute, a callable returning the body's chunks.
LoopStream = Callable[[], AsyncIterator[bytes]]
BUSY_LOG_INTERVAL = 5.0
_WorkItem = tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]


class LastIdleFirstExecutor(Executor):
    """A bounded thread pool that hands each task to the thread that became idle last.

    ``ThreadPoolExecutor`` wakes its idle threads in turn, so one client's back-to-back requests rotate
    through every thread of the pool: each has its own database connection (and the token read it reuses),
    its own CPU caches. Here the most recently idle thread takes the next task, so sequential traffic stays
    on one warm thread and the others stay parked. Threads start only when none is idle (up to
    ``max_threads``, then tasks wait in order) and are kept; they are daemon threads, so a call still waiting
    on an upstream does not hold up the process's exit after the server's graceful shutdown.
    """

    def __init__(self, max_threads: int, name: str) -> None:
        self._max_threads = max_threads
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_WorkItem | None]] = []  # a stack: the last idle thread on top
        self._backlog: deque[_WorkItem] = deque()
        self._threads = 0
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        item: _WorkItem = (functools.partial(fn, **kwargs) if kwargs else fn, args, future)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._idle:
                self._idle.pop().put(item)
            elif self._threads < self._max_threads:
                self._threads += 1
                thread = threading.Thread(
                    target=self._work,
                    args=(item,),
                    name=f"aerostack-{self._name}_{self._threads}",
                    daemon=True,
                )
                thread.start()
            else:
                self._backlog.append(item)
        return future

    @property
    def idle_threads(self) -> int:
        with self._lock:
            return len(self._idle)

    def _work(self, item: _WorkItem | None) -> None:
        inbox: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        while item is not None:
            fn, args, future = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except (
                    BaseException
                ) as exc:  # the future carries it to the caller, as ThreadPoolExecutor does
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del fn, args, future, item
            with self._lock:
                if self._backlog:
                    item = self._backlog.popleft()
                    continue
                if self._shutdown:
                    return
                self._idle.append(inbox)
            item = inbox.get()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                for _, _, future in self._backlog:
                    future.cancel()
                self._backlog.clear()
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)


@dataclass
class Lane:
    """A bounded pool of reusable threads for one kind of request.

    ``in_flight`` is only read and written on the event loop's thread, so it needs no lock.
    """

    name: str
    threads: int
    max_body: int
    busy: BusyAnswer
    queue: int = 0  # requests admitted beyond ``threads``, waiting for a free thread
    in_flight: int = 0
    refused: int = 0
    executor: LastIdleFirstExecutor = field(init=False, repr=False)
    _last_busy_log: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        # Threads start only when no idle one is free, and are kept: the pool grows to the peak concurrency
        # and its threads (with their connections) are reused, the warmest first.
        self.executor = LastIdleFirstExecutor(self.threads, self.name)

    @property
    def bound(self) -> int:
        return self.threads + self.queue

    def admit(self) -> bool:
        if self.in_flight >= self.bound:
            self.refused += 1
            now = time.monotonic()
            if now - self._last_busy_log >= BUSY_LOG_INTERVAL:  # one line per interval, not one per refusal
                self._last_busy_log = now
                logger.warning(
                    "%s lane full (%d in flight): refused %d requests so far",
                    self.name,
                    self.in_flight,
                    self.refused,
                )
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Started:
    """What the WSGI application produced in its thread: the status line, headers and the body or a stream."""

    status: int
    headers: Headers
    body: bytes
    stream: Iterator[bytes] | None
    result: Iterable[bytes]
    loop_stream: LoopStream | None = None


class Front:
    """An ASGI application that serves a WSGI application through lanes chosen by ``route(path)``.

    Request bodies are read into memory before a lane runs them, so their total is capped: ``body_budget``
    bytes for all requests being read or served at once (``buffered``, only touched on the loop's thread).
    A request whose body would go beyond it is answered with its lane's busy response, so a flood of large
    bodies on thousands of connections cannot take the process's memory.
    """

    def __init__(
        self, app: WSGIApp, route: Callable[[str], Lane], lanes: list[Lane], *, body_budget: int
    ) -> None:
        self.app = app
        self.route = route
        self.lanes = lanes
        self.body_budget = body_budget
        self.buffered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})  # no WebSocket endpoint: refuse (403)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for lane in self.lanes:
                    lane.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.route(scope["path"])
        reserved = [0]  # bytes of this request counted in self.buffered, given back at the end
        try:
            read = await self._read_body(receive, lane.max_body + 1, reserved)
            if read is None:
                return  # the client went away before its request was complete
            body, complete, within_budget = read
            if not within_budget or not lane.admit():
                status, headers, content = lane.busy(body)
                if not complete:
                    await _drain(receive)
                await _send_whole(send, status, headers, content, close=not complete)
                return
            held = [True]

            def release() -> None:  # once: at the end, or when the response moves to the loop
                if held[0]:
                    held[0] = False
                    lane.release()

            try:
                await self._serve(scope, receive, send, lane, body, complete, release)
            finally:
                release()
        finally:
            self.buffered -= reserved[0]

    async def _read_body(
        self, receive: Receive, limit: int, reserved: list[int]
    ) -> tuple[bytes, bool, bool] | None:
        """The request body (at most ``limit`` bytes), whether it was read to its end and whether it fitted
        in the body budget (if not, what was read so far); None when the client disconnected."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            if chunk:
                if self.buffered + len(chunk) > self.body_budget:
                    return b"".join(chunks), False, False
                self.buffered += len(chunk)
                reserved[0] += len(chunk)
                chunks.append(chunk)
                size += len(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), True, True
            if size >= limit:
                return b"".join(chunks)[:limit], False, True

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        lane: Lane,
        body: bytes,
        complete: bool,
        release: Callable[[], None],
    ) -> None:
        loop = asyncio.get_running_loop()
        environ = wsgi_environ(scope, body)
        try:
            started = await loop.run_in_executor(lane.executor, _run_app, self.app, environ)
        except Exception:
            logger.exception("unhandled error serving %s", scope.get("path"))
            await _send_whole(send, 500, [(b"content-type", b"text/plain")], b"Internal Server Error")
            return
        if started.loop_stream is not None:
            # The lane's work is done (authentication, admission): the stream holds no thread and no slot.
            release()
            await _serve_loop_stream(scope, receive, send, started, complete)
            return
        if started.stream is None:
            if not complete:
                await _drain(receive)
            await _send_whole(send, started.status, started.headers, started.body, close=not complete)
            return
        headers = started.headers if complete else _closing(started.headers)
        await send({"type": "http.response.start", "status": started.status, "headers": headers})
        # One chunk per thread hop: a thread is held while it makes a chunk (e.g. waits for the upstream's
        # next event), never while a chunk goes out to a slow client. The client may close it at any time.
        disconnected = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            while True:
                chunk: asyncio.Future[bytes | None] = loop.run_in_executor(
                    lane.executor, _next_chunk, started.stream
                )
                await asyncio.wait((chunk, disconnected), return_when=asyncio.FIRST_COMPLETED)
                if disconnected.done():
                    # The chunk being made still finishes in its thread (it cannot be interrupted); the
                    # stream is closed right after it, which ends the upstream request.
                    await asyncio.wait({chunk})
                    if not chunk.cancelled() and chunk.exception() is not None:
                        logger.info("a stream of %s failed after its client left", scope.get("path"))
                    break
                try:
                    data = chunk.result()
                except Exception:
                    logger.exception("a streamed response of %s failed", scope.get("path"))
                    data = None
                if data is None:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    break
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
        finally:
            disconnected.cancel()
            try:
                await loop.run_in_executor(lane.executor, _close, started.result)
            except RuntimeError:  # the lane was shut down (the process is stopping): close it here
                _close(started.result)


# -- on the event loop --------------------------------------------------------------------------------------
async def _serve_loop_stream(
    scope: Scope, receive: Receive, send: Send, started: _Started, complete: bool
) -> None:
    """Send a loop stream's chunks until it ends or its client goes away (then it is closed: ``aclose``).

    The status line goes out with the first chunk: a stream that subscribes to something before its first
    chunk (gateway/live.py) is subscribed by the time its client sees the response."""
    assert started.loop_stream is not None
    headers = started.headers if complete else _closing(started.headers)
    chunks = started.loop_stream()
    disconnected = asyncio.ensure_future(_wait_for_disconnect(receive))
    ended = False
    begun = False
    try:
        while True:
            chunk = asyncio.ensure_future(chunks.__anext__())
            await asyncio.wait((chunk, disconnected), return_when=asyncio.FIRST_COMPLETED)
            if not chunk.done():
                chunk.cancel()
                await asyncio.wait({chunk})
                break
            try:
                data = chunk.result()
            except StopAsyncIteration:
                ended = True
                break
            except Exception:
                logger.exception("a loop stream of %s failed", scope.get("path"))
                ended = True
                break
            if not begun:
                begun = True
                await send({"type": "http.response.start", "status": started.status, "headers": headers})
            if data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
        if ended:
            if not begun:
                await send({"type": "http.response.start", "status": started.status, "headers": headers})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        disconnected.cancel()
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                logger.exception("closing a loop stream of %s failed", scope.get("path"))


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# What is read and thrown away of a request body that is refused (413, busy) before the answer goes out: a
# client that sends its whole body before reading (most HTTP clients) then reads the refusal instead of a
# broken pipe. Bounded, so an endless body costs at most this much; the connection closes after the answer.
DRAIN_MAX_BYTES = 1024 * 1024
DRAIN_MAX_SECONDS = 2.0


async def _drain(receive: Receive) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_MAX_SECONDS
    drained = 0
    while drained < DRAIN_MAX_BYTES:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            return
        if message["type"] == "http.disconnect":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _closing(headers: Headers) -> Headers:
    """The response closes the connection: the rest of an over-long request body is never read."""
    return [*(item for item in headers if item[0].lower() != b"connection"), (b"connection", b"close")]


async def _send_whole(send: Send, status: int, headers: Headers, body: bytes, *, close: bool = False) -> None:
    if (
        status >= 200
        and status not in (204, 304)
        and not any(name == b"content-length" for name, _ in headers)
    ):
        # The whole body is known: Content-Length rather than chunked encoding (as gunicorn's WSGI worker).
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    if close:
        headers = _closing(headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def wsgi_environ(scope: Scope, body: bytes) -> dict[str, Any]:
    """The WSGI environ (PEP 3333) of an ASGI HTTP scope whose whole body has been read."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf-8").decode("latin-1"),
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] if server[1] is not None else 80),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        # Always the length of what was read: a chunked request body (no Content-Length) is not lost.
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
            continue
        if name == "CONTENT_LENGTH":
            # A declared length beyond what was read stays visible, so the application answers 413 for it.
            if value.isdigit() and int(value) > len(body):
                environ["CONTENT_LENGTH"] = value
            continue
        key = f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


# -- in a lane's thread -------------------------------------------------------------------------------------
def _run_app(app: WSGIApp, environ: dict[str, Any]) -> _Started:
    captured: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[..., None]:
        if exc_info is not None and captured:
            raise exc_info[1].with_traceback(exc_info[2])
        captured[:] = [(status, headers)]
        return _no_write

    result = app(environ, start_response)
    loop_stream: LoopStream | None = getattr(result, "loop_stream", None)
    if loop_stream is not None:
        # Its body comes from the loop: close the response here, in the thread that made it (Django's
        # request_finished: this thread's database connections), before the stream starts.
        _close(result)
        if not captured:
            raise RuntimeError("the WSGI application did not call start_response")
        status, headers = captured[0]
        encoded = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        return _Started(int(status.split(" ", 1)[0]), encoded, b"", None, result, loop_stream)
    try:
        # Django's streaming responses (SSE relays) go out chunk by chunk; a file response (static files) is
        # read here at once, because each chunk handed over costs a thread hop.
        streaming = (
            bool(getattr(result, "streaming", False)) and getattr(result, "file_to_stream", None) is None
        )
        stream = iter(result) if streaming else None
        body = b"" if streaming else b"".join(result)
        if not captured:
            raise RuntimeError("the WSGI application did not call start_response")
    except BaseException:
        _close(result)
        raise
    if stream is None:
        _close(result)
    status, headers = captured[0]
    encoded = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    return _Started(int(status.split(" ", 1)[0]), encoded, body, stream, result)


def _no_write(data: bytes) -> None:
    raise RuntimeError("the write() callable of start_response is not supported")


def _next_chunk(stream: Iterator[bytes]) -> bytes | None:
    return next(stream, None)


def _close(result: Iterable[bytes]) -> None:
    """WSGI's close(): Django sends ``request_finished`` here (closing this thread's expired connections)."""
    close = getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            logger.exception("closing a response failed")
