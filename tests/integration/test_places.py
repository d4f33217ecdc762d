"""WHATSAT through the Places service (PROTOCOL.md sections 4, 9 and 10).

Every server here talks to a local Places stand-in (places_standin.py), never to
the real service. Expected replies are computed in this file from the body the
stand-in served, by applying the section 4 rules independently of the server:
results cut to the bound (bytes from the end of entry number bound to the end of
the last entry removed), runs of LFs collapsed, leading and trailing LFs removed,
then the AT line before it and a blank line after it.

Each test uses client ids and positions of its own, so the server's Places cache
never carries an answer from one test into another.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_places
"""

import itertools
import json
import re
import socket
import struct
import time
import unittest
import uuid
from urllib.parse import unquote

from herdtest import (AT_RE_B, PLACES_KEY_ENV, Herd, HerdTestCase, HerdTimeout, iamat_line, ns_text,
                      wait_until)
from places_standin import NEARBY_PATH, PlacesStandIn, google_error_body, nearby_body

S = "Bailey"
# Must never appear in a reply or in the log. Only URL-safe characters, so the
# query carries it unchanged.
KEY = "AIzaTest-k3y_9f2c.77Qx"
RESULTS = 5  # places in a normal stand-in answer
NO_KEY_REPLY = (b'{"html_attributions": [], "results": [], "status": "REQUEST_DENIED", '
                b'"error_message": "no Places API key is configured"}')

_serial = itertools.count(1)
_T0 = time.time_ns() - 3600 * 10**9  # client times: an hour ago, strictly increasing


def uid(prefix="p"):
    """A client id no other test uses."""
    return ("%s-%s" % (prefix, uuid.uuid4().hex[:12])).encode()


def next_time():
    """A client time text newer than every earlier one."""
    return ns_text(_T0 + next(_serial) * 1000)


def fresh_position():
    """(ISO 6709 position bytes, expected location query value) never used before."""
    n = next(_serial)
    lat = "+%d.%06d" % (10 + n % 70, n % 10**6)
    lng = "-%d.%06d" % (100 + n % 70, (n * 7919) % 10**6)
    return (lat + lng).encode(), lat[1:] + "," + lng


def location_of(pos):
    """The location query value for a position (section 10), for positions
    written here: split at the second sign, drop a leading '+'."""
    text = pos.decode()
    i = max(text.rfind("+"), text.rfind("-"))
    lat, lng = text[:i], text[i:]
    return lat.lstrip("+") + "," + lng.lstrip("+")


# ------------------------------------------------- the section 4 rules, independently

_WS = b" \t\r\n"


def _skip_ws(b, i):
    while i < len(b) and b[i] in _WS:
        i += 1
    return i


def _skip_string(b, i):
    """b[i] is '"'; returns the index after the closing quote."""
    i += 1
    while b[i] != 0x22:
        i += 2 if b[i] == 0x5C else 1
    return i + 1


def _skip_value(b, i):
    """Returns the index after the JSON value starting at b[i]."""
    c = b[i]
    if c == 0x22:
        return _skip_string(b, i)
    if c in b"[{":
        depth = 0
        while True:
            c = b[i]
            if c == 0x22:
                i = _skip_string(b, i)
                continue
            if c in b"[{":
                depth += 1
            elif c in b"]}":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
    while i < len(b) and b[i] not in b",]}" and b[i] not in _WS:
        i += 1
    return i


def result_entry_ends(body):
    """End offsets of the entries of the top-level "results" array ([] if none)."""
    i = _skip_ws(body, 0)
    assert body[i:i + 1] == b"{", "test body is not an object"
    i = _skip_ws(body, i + 1)
    while body[i:i + 1] != b"}":
        key_end = _skip_string(body, i)
        key = body[i:key_end]
        i = _skip_ws(body, key_end)
        assert body[i:i + 1] == b":"
        i = _skip_ws(body, i + 1)
        if key == b'"results"':
            assert body[i:i + 1] == b"["
            ends = []
            i = _skip_ws(body, i + 1)
            while body[i:i + 1] != b"]":
                i = _skip_value(body, i)
                ends.append(i)
                i = _skip_ws(body, i)
                if body[i:i + 1] == b",":
                    i = _skip_ws(body, i + 1)
            return ends
        i = _skip_ws(body, _skip_value(body, i))
        if body[i:i + 1] == b",":
            i = _skip_ws(body, i + 1)
    return []


def trimmed_body(body, bound):
    """The body as a WHATSAT reply carries it (section 4)."""
    ends = result_entry_ends(body)
    if len(ends) > bound:
        body = body[:ends[bound - 1]] + body[ends[-1]:]
    return re.sub(rb"\n{2,}", b"\n", body).strip(b"\n")


def whatsat_reply(at_line, body, bound):
    """The whole expected reply; at_line includes its LF."""
    return at_line + trimmed_body(body, bound) + b"\n\n"


def standin_body(location, radius, results=RESULTS):
    """What the stand-in serves in normal mode for that location and radius."""
    return nearby_body(location, radius, results)


class SelfCheck(unittest.TestCase):
    """The expected-reply helpers themselves, on hand-made bodies."""

    def test_cut(self):
        body = (b'{"a": {"results": [9]}, "results" : [ {"x": "]},\\""}, \n\n[1, {}] ,3\n ],'
                b' "status": "OK"}')
        self.assertEqual(trimmed_body(body, 1),
                         b'{"a": {"results": [9]}, "results" : [ {"x": "]},\\""}\n ], "status": "OK"}')
        self.assertEqual(trimmed_body(body, 2),
                         b'{"a": {"results": [9]}, "results" : [ {"x": "]},\\""}, \n[1, {}]\n ],'
                         b' "status": "OK"}')
        self.assertEqual(trimmed_body(body, 3), re.sub(rb"\n+", b"\n", body))
        self.assertEqual(trimmed_body(b'\n\n{"results": []}\n\n\n', 1), b'{"results": []}')


# ------------------------------------------------------------------ test cases

class PlacesCase(HerdTestCase):
    """One server, S, whose Places URL is a stand-in; subclasses set the herd up."""

    herd = None
    places = None
    herd_kw = {}  # extra Herd arguments
    server_env = {PLACES_KEY_ENV: KEY}

    @classmethod
    def setUpClass(cls):
        cls.places = PlacesStandIn(key=KEY, results=RESULTS).start()
        cls.addClassCleanup(cls.places.stop)
        cls.herd = Herd(servers=[S], places_url=cls.places.url, env=cls.server_env, **cls.herd_kw)
        cls.addClassCleanup(cls.herd.close)
        cls.herd.start(S)

    def setUp(self):
        self.places.reset()
        self.log_start = max(0, len(self.herd.log_bytes(S)) - len(KEY))

    def tearDown(self):
        self.places.release()  # nothing stays held into the next test
        state = self.herd.state(S, settle=0.05)
        if state:
            self.herd.start(S)  # keeps a crash from failing every later test
            self.fail("the server died during this test: " + state)
        self.assertNotIn(KEY.encode(), self.herd.log_bytes(S)[self.log_start:],
                         "this test put the Places key in the log")

    # -- helpers
    def send(self, data, timeout=10):
        return self.herd.send(S, data, timeout)

    def iamat(self, cid, pos):
        """Sends an IAMAT with a fresh time; returns the AT line (with LF)."""
        t = next_time()
        reply = self.send(iamat_line(cid, pos, t) + b"\n")
        m = AT_RE_B.match(reply[:-1])
        self.assertTrue(m and reply.endswith(b"\n") and m.group(3) == cid and m.group(4) == pos
                        and m.group(5) == t, "bad IAMAT reply %r" % reply)
        return reply

    def located(self, prefix="p", pos=None):
        """A fresh client at a fresh position: (cid, pos, location, AT line)."""
        cid = uid(prefix)
        if pos is None:
            pos, loc = fresh_position()
        else:
            loc = location_of(pos)
        return cid, pos, loc, self.iamat(cid, pos)

    def whatsat(self, cid, radius, bound, timeout=10):
        return self.send(b"WHATSAT %s %s %d\n" % (cid, radius.encode(), bound), timeout)

    def requests_for(self, location):
        return [r for r in self.places.requests if r.query.get("location") == location]

    def assertQuery(self, req, location, radius):
        self.assertEqual(req.path, NEARBY_PATH)
        self.assertEqual(req.query, {"location": location, "radius": radius, "key": KEY})
        self.assertEqual(unquote(req.raw_query),
                         "location=%s&radius=%s&key=%s" % (location, radius, KEY))

    def assertErrorReply(self, reply, at_line, status="UNKNOWN_ERROR"):
        """reply is AT line + a one-object error body + blank line; returns the object."""
        self.assertTrue(reply.startswith(at_line), "reply %r does not start with %r"
                        % (reply[:300], at_line))
        self.assertTrue(reply.endswith(b"}\n\n"), "reply does not end with '}\\n\\n': %r" % reply)
        self.assertNotIn(b"\n\n", reply[:-1], "a blank line before the end: %r" % reply)
        self.assertNotIn(KEY.encode(), reply, "the key is in the reply")
        obj = json.loads(reply[len(at_line):-2].decode("utf-8"))
        self.assertIsInstance(obj, dict)
        self.assertEqual(set(obj), {"html_attributions", "results", "status", "error_message"},
                         reply)
        self.assertEqual(obj["status"], status, reply)
        self.assertEqual(obj["html_attributions"], [], reply)
        self.assertEqual(obj["results"], [], reply)
        self.assertIsInstance(obj["error_message"], str)
        self.assertTrue(obj["error_message"], reply)
        return obj

    def release_and_recv(self, client, term=b"\n\n", timeout=10):
        """Releases held stand-in requests until `client` receives `term`.
        (A request is recorded a moment before it starts waiting for a release,
        so one release right after wait_for_count could come too early.)"""
        deadline = time.monotonic() + timeout
        while True:
            self.places.release()
            try:
                return client.recv_until(term, timeout=0.05)
            except HerdTimeout:
                if time.monotonic() >= deadline or client.eof:
                    raise

    def log_count(self, text):
        return self.herd.log_text(S).count(text)


class WhatsatTest(PlacesCase):
    """Key set, cache at its default (60 s)."""

    def test_normal_reply_exact(self):
        cid, pos = b"kiwi-" + uid(), b"+34.068930-118.445127"
        at = self.iamat(cid, pos)
        reply = self.whatsat(cid, "10", 3)
        self.assertEqual(self.places.count, 1)
        req = self.places.requests[0]
        self.assertQuery(req, "34.068930,-118.445127", "10000")
        body = standin_body("34.068930,-118.445127", "10000")
        self.assertEqual(len(result_entry_ends(body)), RESULTS)
        self.assertEqual(reply, whatsat_reply(at, body, 3))

    def test_bounds(self):
        # Entry 2's name is full of JSON punctuation, so a cut after entry 1 or
        # 2 must scan strings properly. Each bound gets its own radius: no cache.
        cid, pos, loc, at = self.located()
        for i, bound in enumerate((1, 2, 4, 5, 6, 20)):
            radius = str(i + 1)
            with self.subTest(bound=bound):
                reply = self.whatsat(cid, radius, bound)
                self.assertTrue(self.requests_for(loc), "no call for %s: %r"
                                % (loc, self.places.requests))
                self.assertQuery(self.requests_for(loc)[-1], loc, radius + "000")
                body = standin_body(loc, radius + "000")
                self.assertEqual(reply, whatsat_reply(at, body, bound))
                if bound >= RESULTS:  # nothing cut: the body less its final LF
                    self.assertEqual(reply, at + body.rstrip(b"\n") + b"\n\n")

    def test_radius_in_metres(self):
        cid, pos, loc, at = self.located()
        cases = (("10", "10000"), ("1.5", "1500"), ("50", "50000"), ("0.001", "1"),
                 ("007.250", "7250"), ("4.35", "4350"), ("0.1", "100"), ("12.000", "12000"),
                 ("49.999", "49999"))
        for radius, metres in cases:
            with self.subTest(radius=radius):
                self.places.reset()
                reply = self.whatsat(cid, radius, 2)
                self.assertEqual(self.places.count, 1, "radius %s: %r" % (radius, self.places.requests))
                self.assertQuery(self.places.requests[0], loc, metres)
                self.assertEqual(reply, whatsat_reply(at, standin_body(loc, metres), 2))

    def test_location_signs_and_digits(self):
        for pos, loc in ((b"-33.8670522+151.1957362", "-33.8670522,151.1957362"),
                         (b"+34-118", "34,-118"),
                         (b"-0.000001+0.5", "-0.000001,0.5"),
                         (b"+45.123456789012-120.000000000001",
                          "45.123456789012,-120.000000000001")):
            with self.subTest(pos=pos):
                self.places.reset()
                cid, _, _, at = self.located(pos=pos)
                reply = self.whatsat(cid, "2", 5)
                self.assertEqual(self.places.count, 1)
                self.assertQuery(self.places.requests[0], loc, "2000")
                self.assertEqual(reply, whatsat_reply(at, standin_body(loc, "2000"), 5))

    def test_bound_larger_than_result_count(self):
        cid, pos, loc, at = self.located()
        self.places.set_location_mode(loc, "normal", results=3)
        reply = self.whatsat(cid, "5", 20)
        body = standin_body(loc, "5000", 3)
        self.assertEqual(reply, at + body.rstrip(b"\n") + b"\n\n")
        self.assertEqual(reply, whatsat_reply(at, body, 20))

    def test_body_newlines_and_cut(self):
        # A chosen body: leading LFs, blank lines inside and between entries,
        # LFs left between the last kept entry and ']', a results key nested
        # deeper that must not be taken for the top-level one.
        body = (b'\n\n{\n\n   "html_attributions" : [],\n'
                b'   "next" : { "results" : [ 1, 2, 3 ] },\n'
                b'   "results" : [\n\n      { "name" : "a ]}, \\"x\\" [" },\n\n\n'
                b'      { "name" : "b", "n" : [ {}, [] ] }   ,   { "name" : "c" }\n\n   ],\n'
                b'   "status" : "OK"\n}\n\n\n')
        cid, pos, loc, at = self.located()
        self.places.set_location_mode(loc, "body", body=body)
        for i, bound in enumerate((1, 2, 3)):
            with self.subTest(bound=bound):
                reply = self.whatsat(cid, "%d" % (i + 1), bound)
                self.assertEqual(reply, whatsat_reply(at, body, bound))
        self.assertEqual(whatsat_reply(at, body, 1),
                         at + b'{\n   "html_attributions" : [],\n'
                              b'   "next" : { "results" : [ 1, 2, 3 ] },\n'
                              b'   "results" : [\n      { "name" : "a ]}, \\"x\\" [" }\n   ],\n'
                              b'   "status" : "OK"\n}\n\n')

    def test_object_without_results_passes_through(self):
        # Any JSON object is the service's answer; only its results are cut.
        body = b'{"status" : "OK",\n\n "note" : "no results key"}\n'
        cid, pos, loc, at = self.located()
        self.places.set_location_mode(loc, "body", body=body)
        self.assertEqual(self.whatsat(cid, "10", 1),
                         at + b'{"status" : "OK",\n "note" : "no results key"}\n\n')

    # -- errors

    def test_http_error(self):
        cid, pos, loc, at = self.located()
        self.places.set_location_mode(loc, "http_error", status=503)
        reply = self.whatsat(cid, "10", 5)
        obj = self.assertErrorReply(reply, at)
        self.assertIn("503", obj["error_message"])
        self.assertGreaterEqual(len(self.requests_for(loc)), 1)
        self.assertQuery(self.requests_for(loc)[0], loc, "10000")

    def test_http_error_with_json_object_body(self):
        # A 500 whose body is a Google-shaped JSON object is still an HTTP error.
        cid, pos, loc, at = self.located()
        self.places.set_location_mode(loc, "http_error", status=500,
                                      body=google_error_body("OK", "looks fine"))
        obj = self.assertErrorReply(self.whatsat(cid, "10", 5), at)
        self.assertIn("500", obj["error_message"])

    def test_dropped_connection(self):
        cid, pos, loc, at = self.located()
        self.places.set_location_mode(loc, "drop")
        self.assertErrorReply(self.whatsat(cid, "10", 5), at)
        self.assertGreaterEqual(len(self.requests_for(loc)), 1)

    def test_not_json(self):
        cid, pos, loc, at = self.located()
        self.places.set_location_mode(loc, "not_json")
        self.assertErrorReply(self.whatsat(cid, "10", 5), at)

    def test_json_that_is_not_an_object(self):
        cid, pos, loc, at = self.located()
        for i, body in enumerate((b'[{"results": []}]\n', b'"OK"', b"", b'{"results": [',
                                  b'{"status": "OK"} trailing', b"\n\n\n")):
            with self.subTest(body=body):
                radius = "%d" % (i + 1)
                self.places.set_location_mode(loc, "body", body=body)
                self.assertErrorReply(self.whatsat(cid, radius, 5), at)

    # -- the cache

    def test_cache_hit(self):
        cid, pos, loc, at = self.located()
        first = self.whatsat(cid, "10", 3)
        expected = whatsat_reply(at, standin_body(loc, "10000"), 3)
        self.assertEqual(first, expected)
        self.assertEqual(self.places.count, 1)
        second = self.whatsat(cid, "10", 3)
        self.assertEqual(second, expected)
        self.assertEqual(self.places.count, 1, "a second identical WHATSAT called upstream")

        # Another radius is another question.
        self.assertEqual(self.whatsat(cid, "11", 3),
                         whatsat_reply(at, standin_body(loc, "11000"), 3))
        self.assertEqual(self.places.count, 2)

        # A newer IAMAT at the same position: the reply carries the new AT line.
        at2 = self.iamat(cid, pos)
        self.assertNotEqual(at2, at)
        self.assertEqual(self.whatsat(cid, "10", 3), whatsat_reply(at2, standin_body(loc, "10000"), 3))

        # A newer IAMAT elsewhere: asked upstream for the new location.
        pos3, loc3 = fresh_position()
        at3 = self.iamat(cid, pos3)
        before = self.places.count
        self.assertEqual(self.whatsat(cid, "10", 3), whatsat_reply(at3, standin_body(loc3, "10000"), 3))
        self.assertEqual(self.places.count, before + 1)
        self.assertQuery(self.places.requests[-1], loc3, "10000")

    def test_cache_shared_between_clients_at_one_place(self):
        pos, loc = fresh_position()
        cid1, _, _, at1 = self.located(pos=pos)
        cid2, _, _, at2 = self.located(pos=pos)
        self.assertEqual(self.whatsat(cid1, "3", 5), whatsat_reply(at1, standin_body(loc, "3000"), 5))
        self.assertEqual(self.whatsat(cid2, "3", 2), whatsat_reply(at2, standin_body(loc, "3000"), 2))
        self.assertEqual(len(self.requests_for(loc)), 1)

    def test_only_ok_bodies_are_cached(self):
        cases = (
            ("zero results", dict(mode="normal", results=0), True),
            ("OVER_QUERY_LIMIT body", dict(mode="body", body=google_error_body(
                "OVER_QUERY_LIMIT", "You have exceeded your daily request quota.")), True),
            ("INVALID_REQUEST body", dict(mode="body", body=google_error_body(
                "INVALID_REQUEST", "bad")), True),
            ("HTTP 503", dict(mode="http_error", status=503), False),
            ("not JSON", dict(mode="not_json"), False),
        )
        for name, mode, verbatim in cases:
            with self.subTest(name):
                cid, pos, loc, at = self.located()
                params = dict(mode)
                self.places.set_location_mode(loc, params.pop("mode"), **params)
                for attempt in (1, 2):
                    reply = self.whatsat(cid, "10", 5)
                    if verbatim:
                        body = mode.get("body") or standin_body(loc, "10000", 0)
                        self.assertEqual(reply, whatsat_reply(at, body, 5))
                    else:
                        self.assertErrorReply(reply, at)
                    self.assertEqual(len(self.requests_for(loc)), attempt,
                                     "%s: attempt %d was not asked upstream" % (name, attempt))

    # -- concurrency

    def test_concurrent_whatsats_and_iamats(self):
        n = 20
        cid, pos, loc, at = self.located("conc")
        self.places.set_mode("slow", delay=1.0)
        clients = [self.herd.connect(S) for _ in range(n)]
        for c in clients:
            self.addCleanup(c.close)
        start = time.monotonic()
        for i, c in enumerate(clients):
            c.send(b"WHATSAT %s %d %d\n" % (cid, i + 1, 1 + i % 20))
        self.assertTrue(self.places.wait_for_count(1, timeout=5), "no Places call")
        # IAMATs while the Places calls are outstanding are answered at once.
        for _ in range(5):
            t0 = time.monotonic()
            self.iamat(uid("meanwhile"), fresh_position()[0])
            self.assertLess(time.monotonic() - t0, 0.5, "an IAMAT waited for Places calls")
        replies = [c.recv_until(b"\n\n", timeout=10) for c in clients]
        elapsed = time.monotonic() - start
        self.assertLess(elapsed, 1.8, "20 one-second Places calls took %.2fs: not concurrent"
                        % elapsed)
        self.assertEqual(self.places.count, n)
        for i, reply in enumerate(replies):
            metres = "%d000" % (i + 1)
            self.assertEqual(reply, whatsat_reply(at, standin_body(loc, metres), 1 + i % 20))

    def test_identical_concurrent_whatsats_make_one_call(self):
        n = 10
        cid, pos, loc, at = self.located()
        bar_cid, bar_pos, bar_loc, bar_at = self.located("barrier")
        self.places.set_mode("hold")
        self.places.set_location_mode(bar_loc, "normal")
        line = b"WHATSAT " + cid + b" 10 4\n"
        clients = [self.herd.connect(S) for _ in range(n)]
        for c in clients:
            self.addCleanup(c.close)
            c.send(line)
        self.assertTrue(self.places.wait_for_count(1), "no Places call")
        wait_until(lambda: self.log_count(line[:-1].decode()) >= n,
                   msg="the server did not log %d WHATSATs" % n)
        # A barrier: one more WHATSAT, received after all ten, goes the same way
        # to the Places worker; once it is answered, the ten have been seen there.
        self.assertEqual(self.whatsat(bar_cid, "10", 4),
                         whatsat_reply(bar_at, standin_body(bar_loc, "10000"), 4))
        first = self.release_and_recv(clients[0])
        replies = [first] + [c.recv_until(b"\n\n") for c in clients[1:]]
        expected = whatsat_reply(at, standin_body(loc, "10000"), 4)
        for reply in replies:
            self.assertEqual(reply, expected)
        self.assertEqual(len(self.requests_for(loc)), 1,
                         "%d identical WHATSATs in flight made %d upstream calls"
                         % (n, len(self.requests_for(loc))))
        self.assertEqual(self.places.count, 2)

    def test_pipelined_whatsat_then_iamat(self):
        cid, pos, loc, at = self.located()
        other, other_pos = uid("other"), fresh_position()[0]
        t = next_time()
        unknown = uid("nobody")
        self.places.set_mode("hold")
        with self.herd.connect(S) as c:
            c.send(b"WHATSAT " + cid + b" 10 2\nIAMAT " + other + b" " + other_pos + b" " + t
                   + b"\nWHATSAT " + unknown + b" 10 2\n")
            c.shutdown_write()
            self.assertTrue(self.places.wait_for_count(1), "no Places call")
            first = self.release_and_recv(c)
            rest = c.read_to_eof()
        self.assertEqual(first, whatsat_reply(at, standin_body(loc, "10000"), 2))
        lines = rest.split(b"\n")
        self.assertEqual(len(lines), 3, rest)
        m = AT_RE_B.match(lines[0])
        self.assertTrue(m and m.group(3) == other and m.group(4) == other_pos and m.group(5) == t,
                        "second reply is not the IAMAT's AT line: %r" % rest)
        self.assertEqual(lines[1:], [b"? WHATSAT " + unknown + b" 10 2", b""])

    def test_client_gone_before_answer(self):
        # quitter and stayer ask the same question, alone asks its own; quitter
        # and alone reset their connections while the Places calls are held.
        pos, loc = fresh_position()
        cid, _, _, at = self.located(pos=pos)
        alone_cid, alone_pos, alone_loc, _ = self.located()
        self.places.set_mode("hold")
        line = b"WHATSAT " + cid + b" 10 4\n"
        alone_line = b"WHATSAT " + alone_cid + b" 10 4\n"
        quitter, stayer, alone = (self.herd.connect(S) for _ in range(3))
        for c in (quitter, stayer, alone):
            self.addCleanup(c.close)
        quitter.send(line)
        alone.send(alone_line)
        stayer.send(line)
        wait_until(lambda: self.log_count(line[:-1].decode()) >= 2,
                   msg="the server did not log both identical WHATSATs")
        wait_until(lambda: self.requests_for(loc) and self.requests_for(alone_loc),
                   msg="the Places calls did not arrive")
        for c in (quitter, alone):
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        for c in (quitter, alone):
            wait_until(lambda: re.search(r"closed[^\n]*:%d\b" % c.local_port,
                                         self.herd.log_text(S)),
                       msg="the server did not log port %d closing" % c.local_port)
        self.assertEqual(self.release_and_recv(stayer),
                         whatsat_reply(at, standin_body(loc, "10000"), 4))
        # The server goes on answering, the lone client's question included.
        self.places.set_mode("normal")
        cid2, pos2, loc2, at2 = self.located()
        self.assertEqual(self.whatsat(cid2, "10", 4),
                         whatsat_reply(at2, standin_body(loc2, "10000"), 4))
        alone_at = self.iamat(alone_cid, alone_pos)
        with self.herd.connect(S) as c:
            c.send(alone_line)
            self.assertEqual(self.release_and_recv(c),
                             whatsat_reply(alone_at, standin_body(alone_loc, "10000"), 4))
        self.assertEqual(self.herd.state(S, settle=0.05), "")


def replies_of(clients, want, timeout=10):
    """Waits until `want` of `clients` have a whole reply (through its blank
    line); returns {client index: reply}."""
    got = {}
    deadline = time.monotonic() + timeout
    while len(got) < want:
        if time.monotonic() > deadline:
            raise HerdTimeout("%d of %d replies after %gs" % (len(got), want, timeout))
        for i, c in enumerate(clients):
            if i not in got:
                try:
                    got[i] = c.recv_until(b"\n\n", timeout=0.01)
                except HerdTimeout:
                    if c.eof:
                        raise
    return got


class BoundsTest(PlacesCase):
    """places.max_in_flight = 4, places.max_queued = 8 (PROTOCOL.md section 6)."""

    herd_kw = {"places": {"max_in_flight": 4, "max_queued": 8}}

    def ask_all(self, cid, radii):
        clients = [self.herd.connect(S) for _ in radii]
        for c, r in zip(clients, radii):
            self.addCleanup(c.close)
            c.send(b"WHATSAT %s %s 2\n" % (cid, r.encode()))
        return clients

    def test_in_flight_and_queue_bounds(self):
        """20 different WHATSATs while the service holds every call: 4 calls
        run, 8 wait, 8 are answered at once with UNKNOWN_ERROR. A client of a
        running call leaving lets a queued call start; the rest are answered
        in full, never more than 4 calls at once."""
        cid, pos, loc, at = self.located("bounds")
        self.places.set_mode("hold")
        radii = [str(i + 1) for i in range(20)]
        clients = self.ask_all(cid, radii)
        refused = replies_of(clients, 8)
        for i, reply in refused.items():
            obj = self.assertErrorReply(reply, at)
            self.assertIn("places.max_queued", obj["error_message"])
        # Every request has reached the worker now (the refused ones came
        # after the others in its order), and its calls are started; they
        # reach the stand-in a moment later. A fifth call would show in the
        # final count (12 = the 4 first calls and the 8 queued).
        wait_until(lambda: self.places.count >= 4, msg="calls: %d" % self.places.count)
        self.assertEqual(self.places.count, 4, [r.query["radius"] for r in self.places.requests])
        wait_until(lambda: self.places.active == 4, msg="active calls: %d" % self.places.active)
        self.assertEqual(self.places.peak, 4)
        running = {str(int(r.query["radius"]) // 1000) for r in self.places.requests}
        self.assertFalse(running & {radii[i] for i in refused}, "a refused WHATSAT made a call")

        # The client of one running call leaves: its call is stopped and a
        # queued one takes the slot.
        leaver = next(i for i, r in enumerate(radii) if r in running)
        clients[leaver].sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        clients[leaver].close()
        wait_until(lambda: self.places.gone == 1 and self.places.count == 5,
                   msg="gone %d, calls %d" % (self.places.gone, self.places.count))
        wait_until(lambda: self.places.active == 4, msg="active calls %d" % self.places.active)
        self.places.reset_peak()

        rest = [i for i in range(20) if i not in refused and i != leaver]
        deadline = time.monotonic() + 20
        answered = {}
        while len(answered) < len(rest):
            self.assertLess(time.monotonic(), deadline, "answered %d of %d" % (len(answered), len(rest)))
            self.places.release()
            for i in rest:
                if i not in answered:
                    try:
                        answered[i] = clients[i].recv_until(b"\n\n", timeout=0.01)
                    except HerdTimeout:
                        if clients[i].eof:
                            raise
        for k, reply in answered.items():
            r = radii[k]
            self.assertEqual(reply, whatsat_reply(at, standin_body(loc, r + "000"), 2), "radius " + r)
        self.assertEqual(self.places.count, 12)
        self.assertLessEqual(self.places.peak, 4)

    def test_radius_texts_of_the_same_metres_share_one_call(self):
        """10, 10.0, 10.000 and 010 km are one request: one call, one answer."""
        cid, pos, loc, at = self.located("metres")
        bar_cid, bar_pos, bar_loc, bar_at = self.located("barrier")
        self.places.set_mode("hold")
        self.places.set_location_mode(bar_loc, "normal")
        radii = ["10", "10.0", "10.000", "010"]
        clients = self.ask_all(cid, radii)
        self.assertTrue(self.places.wait_for_count(1), "no Places call")
        wait_until(lambda: all(self.log_count("WHATSAT %s %s 2" % (cid.decode(), r)) for r in radii),
                   msg="the server did not log the four WHATSATs")
        # A barrier, as in test_identical_concurrent_whatsats_make_one_call.
        self.assertEqual(self.whatsat(bar_cid, "10", 2), whatsat_reply(bar_at, standin_body(bar_loc, "10000"), 2))
        first = self.release_and_recv(clients[0])
        replies = [first] + [c.recv_until(b"\n\n") for c in clients[1:]]
        for reply in replies:
            self.assertEqual(reply, whatsat_reply(at, standin_body(loc, "10000"), 2))
        self.assertEqual(len(self.requests_for(loc)), 1)
        # And one cache entry: a later "10.00" is a cache hit.
        self.assertEqual(self.whatsat(cid, "10.00", 2), whatsat_reply(at, standin_body(loc, "10000"), 2))
        self.assertEqual(len(self.requests_for(loc)), 1)

    def test_a_call_nobody_waits_for_is_cancelled(self):
        """Two clients wait on one call: the first leaving does not stop it;
        the second leaving does (the service sees its client go)."""
        cid, pos, loc, at = self.located("cancel")
        self.places.set_mode("hold")
        a, b = self.ask_all(cid, ["7", "7.0"])
        self.assertTrue(self.places.wait_for_count(1), "no Places call")
        wait_until(lambda: self.log_count("WHATSAT %s 7.0 2" % cid.decode()) >= 1, msg="the second WHATSAT")
        for c in (a, b):
            port = c.local_port
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            wait_until(lambda: re.search(r"closed[^\n]*:%d\b" % port, self.herd.log_text(S)),
                       msg="the server did not log port %d closing" % port)
            if c is a:
                # The call goes on for b: a later WHATSAT barrier shows the
                # worker has handled a's cancel by the time it is answered.
                bar_cid, bar_pos, bar_loc, bar_at = self.located("barrier")
                self.places.set_location_mode(bar_loc, "normal")
                self.whatsat(bar_cid, "10", 2)
                self.assertEqual(self.places.gone, 0, "the call stopped while b still waited")
        # Well before the call's own timeout (5 s), which would also end it.
        wait_until(lambda: self.places.gone == 1, timeout=2, msg="the call was not cancelled")
        self.assertEqual(len(self.requests_for(loc)), 1)


class DeadlineTest(PlacesCase):
    """places.timeout_ms = 1500, max_in_flight = 1: a WHATSAT waiting in the
    queue is answered by the node's own deadline (timeout + 1 s)."""

    herd_kw = {"places": {"timeout_ms": 1500, "max_in_flight": 1}}

    def test_every_whatsat_is_answered_by_its_deadline(self):
        cid, pos, loc, at = self.located("deadline")
        self.places.set_mode("hold")  # never released during the test
        clients = [self.herd.connect(S) for _ in range(3)]
        t0 = time.monotonic()
        for i, c in enumerate(clients):
            self.addCleanup(c.close)
            c.send(b"WHATSAT %s %d 2\n" % (cid, i + 1))
        replies = replies_of(clients, 3, timeout=10)
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 1.5 + 1.0 + 0.8, "the last answer came after %.2fs" % elapsed)
        messages = [self.assertErrorReply(r, at)["error_message"] for r in replies.values()]
        self.assertEqual(messages.count("the Places request was not answered within 2500 ms"), 2, messages)
        self.assertEqual(len([m for m in messages if "timed out after 1500 ms" in m]), 1, messages)
        # The first call timed out upstream (libcurl left it); the second
        # started then and was cancelled at the deadline; the third was
        # cancelled at its own deadline, in the queue or (when the two
        # deadlines fell in different sweeps) just after it started. No call
        # is left running for nobody.
        wait_until(lambda: self.places.count in (2, 3) and self.places.gone == self.places.count,
                   msg="a call nobody waits for was not cancelled (%d made, %d gone)"
                   % (self.places.count, self.places.gone))
        self.places.set_mode("normal")
        self.assertEqual(self.whatsat(cid, "9", 2), whatsat_reply(at, standin_body(loc, "9000"), 2))


class NoCacheTest(PlacesCase):
    """places.cache_ttl_ms = 0: every WHATSAT is asked upstream."""

    herd_kw = {"places": {"cache_ttl_ms": 0}}

    def test_cache_off_calls_each_time(self):
        cid, pos, loc, at = self.located()
        expected = whatsat_reply(at, standin_body(loc, "10000"), 3)
        for attempt in (1, 2, 3):
            self.assertEqual(self.whatsat(cid, "10", 3), expected)
            self.assertEqual(len(self.requests_for(loc)), attempt)

class NoKeyTest(PlacesCase):
    """Bailey has no key variable at all, Bona has it empty: neither calls upstream."""

    @classmethod
    def setUpClass(cls):
        cls.places = PlacesStandIn(key=KEY).start()
        cls.addClassCleanup(cls.places.stop)
        cls.herd = Herd(servers=[S, "Bona"], places_url=cls.places.url)
        cls.addClassCleanup(cls.herd.close)
        cls.herd.start(S)  # the harness removes the key variable
        cls.herd.start("Bona", env={PLACES_KEY_ENV: ""})

    def test_no_key(self):
        for name in (S, "Bona"):
            with self.subTest(server=name):
                cid, pos, t = uid(), fresh_position()[0], next_time()
                at = self.herd.send(name, iamat_line(cid, pos, t) + b"\n")
                self.assertTrue(AT_RE_B.match(at[:-1]), at)
                for radius, bound in (("10", 5), ("1.5", 1), ("10", 5)):
                    reply = self.herd.send(name, b"WHATSAT %s %s %d\n" % (cid, radius.encode(), bound))
                    self.assertEqual(reply, at + NO_KEY_REPLY + b"\n\n")
                self.assertEqual(self.places.count, 0, "a call upstream without a key")


class TimeoutTest(PlacesCase):
    """places.timeout_ms = 300 against a stand-in that takes 2 s."""

    herd_kw = {"places": {"timeout_ms": 300}}

    def test_timeout(self):
        cid, pos, loc, at = self.located()
        self.places.set_mode("slow", delay=2.0)
        t0 = time.monotonic()
        reply = self.whatsat(cid, "10", 5)
        elapsed = time.monotonic() - t0
        self.assertErrorReply(reply, at)
        self.assertLess(elapsed, 1.2, "a 300 ms timeout answered after %.2fs" % elapsed)
        self.assertGreaterEqual(elapsed, 0.25, "answered before the timeout could pass")
        self.assertEqual(len(self.requests_for(loc)), 1)
        # Within the timeout, the answer is used.
        self.places.set_mode("normal")
        self.assertEqual(self.whatsat(cid, "11", 5), whatsat_reply(at, standin_body(loc, "11000"), 5))


class KeyNotLoggedTest(HerdTestCase):
    """After normal calls and every kind of failure, the flushed log has no key."""

    def test_key_never_logged(self):
        places = PlacesStandIn(key=KEY).start()
        self.addCleanup(places.stop)
        herd = self.make_herd(servers=[S], places_url=places.url, env={PLACES_KEY_ENV: KEY},
                              places={"timeout_ms": 300})
        herd.start(S)
        cid, pos, t = uid(), fresh_position()[0], next_time()
        at = herd.send(S, iamat_line(cid, pos, t) + b"\n")
        self.assertTrue(AT_RE_B.match(at[:-1]), at)
        loc = location_of(pos)
        modes = ((("normal",), {}), (("http_error",), {"status": 503}), (("drop",), {}),
                 (("not_json",), {}), (("http_error",), {"status": 403}),
                 (("body",), {"body": google_error_body("REQUEST_DENIED", "The provided API key is invalid.")}),
                 (("slow",), {"delay": 1.0}), (("http_error",), {"status": 302}))
        for i, (args, kw) in enumerate(modes):
            places.set_location_mode(loc, *args, **kw)
            reply = herd.send(S, b"WHATSAT %s %d 5\n" % (cid, i + 1))
            self.assertTrue(reply.startswith(at) and reply.endswith(b"\n\n"), reply)
            self.assertNotIn(KEY.encode(), reply)
        self.assertGreaterEqual(places.count, len(modes))
        self.assertEqual(herd.stop(S), 0)
        log = herd.log_bytes(S)
        self.assertIn(b"WHATSAT " + cid, log)
        self.assertNotIn(KEY.encode(), log, "the Places key is in the log")
        self.assertNotIn(KEY.encode(), herd.stderr_text(S).encode("latin-1"),
                         "the Places key is on stderr")


if __name__ == "__main__":
    unittest.main()
