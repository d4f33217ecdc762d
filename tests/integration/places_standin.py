"""A local stand-in for the Google Places Nearby Search service, for tests.

Standard library only (http.server). Every GET or POST whose path does not
start with /__control is a Places request, whatever its path and query: it is
recorded and answered according to the current mode.

As a module::

    from places_standin import PlacesStandIn
    with PlacesStandIn() as places:          # or places = PlacesStandIn().start() ... places.stop()
        env["HERD_PLACES_URL"] = places.url
        places.set_mode("slow", delay=1.0)   # default mode for every request
        places.push_mode("http_error", status=503)  # the next request only
        ...
        assert places.wait_for_count(1, timeout=5)
        req = places.requests[0]             # PlacesRequest(path, query, raw_query, mode)
        assert req.query["radius"] == "10000"
        places.peak                          # most Places requests being answered at once
        places.gone                          # requests whose client left before the answer

As a program (for tests in another language or process)::

    python3 places_standin.py [--port N] [--results N] [--key KEY]

prints ``LISTENING <port>`` on stdout once it accepts connections, and serves
until SIGTERM or SIGINT (exit status 0). It is then driven over HTTP:

    POST /__control/mode      {"mode": "slow", "delay": 1.0}   default mode
    POST /__control/push      {"mode": "drop"}                 one-shot mode, FIFO
    POST /__control/location  {"location": "34.1,-118.4", "mode": "not_json"}
    POST /__control/release   let every request held by the "hold" mode answer
    POST /__control/reset     forget requests, one-shot and location modes, release
                              held requests; default mode normal
    GET  /__control/requests  {"count": N, "requests": [{"path", "query", "raw_query", "mode"}],
                               "active": N, "peak": N, "gone": N}

Modes and their parameters (every mode also takes "delay", seconds to wait
before answering, and "hold": true, to wait for release() first):

    normal      Google-shaped body with "results" (default 5) places; status
                ZERO_RESULTS and an empty array when results is 0
    slow        normal, after "delay" seconds (default 1.0)
    hold        normal, held until release() is called
    http_error  HTTP "status" (default 500) with a small JSON body, or "body";
                3xx answers carry a Location header pointing back here
    drop        the connection is closed without any answer (libcurl retries
                once on a fresh connection when a reused one closes like this,
                so give drop as the default or location mode, not push_mode)
    not_json    HTTP 200 with an HTML page
    body        HTTP "status" (default 200) with exactly "body" (str or bytes;
                over HTTP "body" is text, "body_b64" is base64)

A mode given for a location (the "location" query value, e.g. "34.068930,-118.445127")
wins over a queued one-shot mode, which wins over the default mode.
When constructed with key=..., normal answers check the "key" query value
and answer REQUEST_DENIED (HTTP 200, like Google) when it differs.
"""

import argparse
import base64
import json
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, NamedTuple, Optional
from urllib.parse import parse_qs, urlsplit

NEARBY_PATH = "/maps/api/place/nearbysearch/json"
MODES = ("normal", "slow", "hold", "http_error", "drop", "not_json", "body")


class PlacesRequest(NamedTuple):
    """One Places request as received."""

    path: str  # the path without the query
    query: Dict[str, str]  # decoded query values (the last one when repeated)
    raw_query: str  # the query exactly as sent, still percent-encoded
    mode: str  # the mode that answered it


class Mode:
    """How to answer one request."""

    def __init__(self, mode: str = "normal", results: int = 5, delay: Optional[float] = None,
                 status: Optional[int] = None, body=None, content_type: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None, hold: bool = False):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
        if mode == "body" and body is None:
            raise ValueError("mode 'body' needs body=")
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.mode = mode
        self.results = int(results)
        self.delay = float(delay) if delay is not None else (1.0 if mode == "slow" else 0.0)
        self.status = int(status) if status is not None else (500 if mode == "http_error" else 200)
        self.body = body
        self.content_type = content_type
        self.headers = dict(headers or {})
        self.hold = bool(hold) or mode == "hold"

    @classmethod
    def from_json(cls, obj: dict) -> "Mode":
        args = {k: obj[k] for k in ("mode", "results", "delay", "status", "body", "content_type", "headers",
                                  "hold")
                if k in obj}
        if "body_b64" in obj:
            args["body"] = base64.b64decode(obj["body_b64"])
        return cls(**args)


def _num(v: float) -> str:
    """A coordinate the way Google writes it: up to 7 decimals, no trailing zeros."""
    text = f"{v:.7f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def nearby_body(location: str, radius: str, count: int) -> bytes:
    """A Nearby Search body shaped like Google's (key order, 3-space indent,
    " : " separators, a final newline). Deterministic for its arguments."""
    try:
        lat_text, lng_text = location.split(",", 1)
        lat, lng = float(lat_text), float(lng_text)
    except ValueError:
        lat, lng = 0.0, 0.0
    entries = []
    for i in range(1, count + 1):
        plat, plng = lat + 0.0001 * i, lng - 0.0001 * i
        # The second place has a name full of JSON's own punctuation.
        name = f"Stand-in Place {i}" if i != 2 else "Joe\\u0027s \\\"Grill\\\" [bar], {cafe}"
        entries.append(
            "      {\n"
            "         \"business_status\" : \"OPERATIONAL\",\n"
            "         \"geometry\" : {\n"
            "            \"location\" : {\n"
            f"               \"lat\" : {_num(plat)},\n"
            f"               \"lng\" : {_num(plng)}\n"
            "            },\n"
            "            \"viewport\" : {\n"
            "               \"northeast\" : {\n"
            f"                  \"lat\" : {_num(plat + 0.0013)},\n"
            f"                  \"lng\" : {_num(plng + 0.0013)}\n"
            "               },\n"
            "               \"southwest\" : {\n"
            f"                  \"lat\" : {_num(plat - 0.0013)},\n"
            f"                  \"lng\" : {_num(plng - 0.0013)}\n"
            "               }\n"
            "            }\n"
            "         },\n"
            "         \"icon\" : \"https://maps.gstatic.com/mapfiles/place_api/icons/v1/png_71/generic_business-71.png\",\n"
            f"         \"name\" : \"{name}\",\n"
            f"         \"place_id\" : \"ChIJStandIn{i:04d}\",\n"
            f"         \"reference\" : \"ChIJStandIn{i:04d}\",\n"
            "         \"scope\" : \"GOOGLE\",\n"
            "         \"types\" : [ \"point_of_interest\", \"establishment\" ],\n"
            f"         \"vicinity\" : \"{i} Test Street, radius {json.dumps(radius)[1:-1]}\"\n"
            "      }")
    if entries:
        results = "   \"results\" : [\n" + ",\n".join(entries) + "\n   ],\n"
    else:
        results = "   \"results\" : [],\n"
    status = "OK" if entries else "ZERO_RESULTS"
    return ("{\n   \"html_attributions\" : [],\n" + results + f"   \"status\" : \"{status}\"\n}}\n").encode()


def google_error_body(status: str, message: str) -> bytes:
    return ("{\n"
            f"   \"error_message\" : {json.dumps(message)},\n"
            "   \"html_attributions\" : [],\n"
            "   \"results\" : [],\n"
            f"   \"status\" : \"{status}\"\n"
            "}\n").encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many concurrent connects must not hit a full backlog
    standin: "PlacesStandIn"

    def handle_error(self, request, client_address):
        # A client that gives up (a timeout, a test ending) is not an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real service
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - quiet: tests read their own output
        pass

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self):
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length > 0 else b""
        split = urlsplit(self.path)
        if split.path.startswith("/__control"):
            self._control(split.path, payload)
        else:
            self._places(split.path, split.query)

    def _send(self, status: int, body: bytes, content_type: str = "application/json; charset=UTF-8",
              headers: Optional[Dict[str, str]] = None):
        # A request stops counting as active before its answer goes out: the
        # client may start its next request as soon as it has the answer.
        self._done_active()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _control(self, path: str, payload: bytes):
        si = self.server.standin
        try:
            obj = json.loads(payload.decode("utf-8")) if payload else {}
            if path == "/__control/requests":
                reqs = [r._asdict() for r in si.requests]
                self._send(200, json.dumps({"count": len(reqs), "requests": reqs, "active": si.active,
                                            "peak": si.peak, "gone": si.gone}).encode())
                return
            if path == "/__control/mode":
                si._set_mode(Mode.from_json(obj))
            elif path == "/__control/push":
                si._push_mode(Mode.from_json(obj))
            elif path == "/__control/location":
                si._set_location_mode(obj["location"], Mode.from_json(obj))
            elif path == "/__control/release":
                si.release()
            elif path == "/__control/reset":
                si.reset()
            else:
                self._send(404, b'{"error": "unknown control path"}')
                return
        except (ValueError, KeyError, TypeError) as e:
            self._send(400, json.dumps({"error": str(e)}).encode())
            return
        self._send(200, b'{"ok": true}')

    def _peer_gone(self) -> bool:
        """Whether the client closed its connection (it gave up on the answer)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _places(self, path: str, raw_query: str):
        si = self.server.standin
        query = {k: v[-1] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
        mode = si._take_mode(query.get("location"))
        si._record(PlacesRequest(path, query, raw_query, mode.mode))
        si._enter()
        self._counted = True  # counted as active until its answer starts (see _send)
        try:
            self._answer(si, mode, path, query)
        finally:
            self._done_active()

    def _done_active(self):
        if getattr(self, "_counted", False):
            self._counted = False
            self.server.standin._leave()

    def _answer(self, si, mode, path, query):
        if mode.hold and not si._hold(self._peer_gone):
            self.close_connection = True  # stopping, or the client left: give up on the answer
            return
        if mode.delay > 0 and not si._delay(mode.delay, self._peer_gone):
            self.close_connection = True  # stopping, or the client left: give up on the answer
            return

        if mode.mode == "drop":
            self.close_connection = True
            return
        if mode.mode == "not_json":
            self._send(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>\n", "text/html")
            return
        if mode.mode == "body":
            self._send(mode.status, mode.body, mode.content_type or "application/json; charset=UTF-8",
                       mode.headers)
            return
        if mode.mode == "http_error":
            headers = dict(mode.headers)
            if 300 <= mode.status < 400 and "Location" not in headers:
                headers["Location"] = si.url + "?redirected=1"
            body = mode.body if mode.body is not None else google_error_body(
                "UNKNOWN_ERROR", f"stand-in error {mode.status}")
            self._send(mode.status, body, mode.content_type or "application/json; charset=UTF-8", headers)
            return

        # normal, slow, hold
        if si.key is not None and query.get("key") != si.key:
            self._send(200, google_error_body("REQUEST_DENIED", "The provided API key is invalid."))
            return
        if "location" not in query or "radius" not in query:
            self._send(200, google_error_body("INVALID_REQUEST", "location and radius are required"))
            return
        self._send(200, nearby_body(query["location"], query["radius"], mode.results))


class PlacesStandIn:
    """The stand-in server. Thread-safe; start() before use, stop() after."""

    def __init__(self, port: int = 0, results: int = 5, key: Optional[str] = None):
        self.key = key  # when set, normal answers require this API key
        self._port_wanted = port
        self._default_results = results
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified on each request and release
        self._requests: List[PlacesRequest] = []
        self._default = Mode("normal", results=results)
        self._queue: List[Mode] = []
        self._by_location: Dict[str, Mode] = {}
        self._release_gen = 0
        self._active = 0  # Places requests being answered now
        self._peak = 0  # the most at once since the last reset
        self._gone = 0  # requests whose client left while they were held or delayed
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # ---- life cycle ----

    def start(self) -> "PlacesStandIn":
        self._server = _Server(("127.0.0.1", self._port_wanted), _Handler)
        self._server.standin = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="places-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving; requests still waiting (slow, hold) are dropped."""
        if self._server is None:
            return
        self._stopping.set()
        with self._lock:
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> "PlacesStandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT (control paths live under it)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The Nearby Search URL to give herd (HERD_PLACES_URL)."""
        return self.base_url + NEARBY_PATH

    # ---- what was asked ----

    @property
    def requests(self) -> List[PlacesRequest]:
        """A copy of the Places requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def active(self) -> int:
        """Places requests being answered (held, delayed or in progress) now."""
        with self._lock:
            return self._active

    @property
    def peak(self) -> int:
        """The most Places requests answered at once since start or reset()."""
        with self._lock:
            return self._peak

    def reset_peak(self) -> None:
        """Starts measuring the peak again from the requests active now (a
        client that leaves is seen up to 20 ms late, so a peak across a
        cancel may count one call twice)."""
        with self._lock:
            self._peak = self._active

    @property
    def gone(self) -> int:
        """Held or delayed requests whose client closed its connection first."""
        with self._lock:
            return self._gone

    def wait_for_count(self, n: int, timeout: float = 5.0) -> bool:
        """Waits until at least n Places requests have arrived."""
        with self._lock:
            return self._changed.wait_for(lambda: len(self._requests) >= n, timeout)

    # ---- how to answer ----

    def set_mode(self, mode: str, **params) -> None:
        """The default mode, for every request without a more specific one."""
        self._set_mode(Mode(mode, **params))

    def push_mode(self, mode: str, **params) -> None:
        """A one-shot mode for the next request (queued, first in first out)."""
        self._push_mode(Mode(mode, **params))

    def set_location_mode(self, location: str, mode: str, **params) -> None:
        """The mode for every request whose location query value is `location`."""
        self._set_location_mode(location, Mode(mode, **params))

    def release(self) -> None:
        """Lets every request currently held by the "hold" mode answer."""
        with self._lock:
            self._release_gen += 1
            self._changed.notify_all()

    def reset(self) -> None:
        """Forgets the requests, one-shot and location modes, releases held
        requests, and makes the default mode normal again."""
        with self._lock:
            self._requests.clear()
            self._peak = self._active
            self._gone = 0
            self._queue.clear()
            self._by_location.clear()
            self._default = Mode("normal", results=self._default_results)
            self._release_gen += 1
            self._changed.notify_all()

    # ---- internals, called by the handler threads ----

    def _set_mode(self, mode: Mode) -> None:
        with self._lock:
            self._default = mode

    def _push_mode(self, mode: Mode) -> None:
        with self._lock:
            self._queue.append(mode)

    def _set_location_mode(self, location: str, mode: Mode) -> None:
        with self._lock:
            self._by_location[location] = mode

    def _take_mode(self, location: Optional[str]) -> Mode:
        with self._lock:
            if location is not None and location in self._by_location:
                return self._by_location[location]
            if self._queue:
                return self._queue.pop(0)
            return self._default

    def _record(self, req: PlacesRequest) -> None:
        with self._lock:
            self._requests.append(req)
            self._changed.notify_all()

    def _enter(self) -> None:
        with self._lock:
            self._active += 1
            self._peak = max(self._peak, self._active)

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1
            self._changed.notify_all()

    def _client_left(self) -> bool:
        with self._lock:
            self._gone += 1
            self._changed.notify_all()
        return False

    def _hold(self, peer_gone=lambda: False) -> bool:
        """Waits for release(); False when the stand-in is stopping or the
        client left (peer_gone() is asked every 20 ms)."""
        with self._lock:
            gen = self._release_gen
            while not self._changed.wait_for(lambda: self._release_gen != gen or self._stopping.is_set(),
                                             0.02):
                self._lock.release()
                try:
                    if peer_gone():
                        return self._client_left()
                finally:
                    self._lock.acquire()
            return not self._stopping.is_set()

    def _delay(self, seconds: float, peer_gone=lambda: False) -> bool:
        """Waits `seconds`; False when the stand-in is stopping or the client left."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return True
            if self._stopping.wait(min(left, 0.02)):
                return False
            if peer_gone():
                return self._client_left()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Places Nearby Search stand-in for herd tests")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    ap.add_argument("--results", type=int, default=5, help="places in a normal answer (default 5)")
    ap.add_argument("--key", default=None, help="API key that normal answers require")
    args = ap.parse_args(argv)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    standin = PlacesStandIn(port=args.port, results=args.results, key=args.key).start()
    print(f"LISTENING {standin.port}", flush=True)
    while not done.wait(0.5):
        pass
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
