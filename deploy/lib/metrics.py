#!/usr/bin/env python3
"""The Prometheus text format (version 0.0.4), parsed strictly: one parser
for herdctl (admin.py) and the tests (tests/integration/test_operations.py).

    m = Metrics(text)         # ValueError naming the first bad line
    m.get("herd_clients")     # one sample's value, or None
    m.get("herd_link_up", peer="Bona")
    m.peers("herd_link_up")   # {peer: value} of a per-neighbour metric
    m.total("herd_commands_total", command="IAMAT")

Every line must be blank, a comment, or `name{labels} value`; a sample must
come after the TYPE of its family, and no sample or TYPE may appear twice.
"""

import re

SAMPLE_RE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)\Z")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|\Z)')
VALUE_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\Z|[+-]Inf\Z|NaN\Z")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class Metrics:
    """A /metrics body, parsed strictly."""

    def __init__(self, text):
        self.text = text
        self.samples = {}  # (name, frozenset of label pairs) -> float
        self.types = {}    # family -> type
        for number, line in enumerate(text.split("\n"), 1):
            where = "line %d %r" % (number, line)
            if line == "":
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] == "TYPE":
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ValueError("bad TYPE, " + where)
                    if parts[2] in self.types:
                        raise ValueError("TYPE given twice, " + where)
                    self.types[parts[2]] = parts[3]
                continue
            m = SAMPLE_RE.match(line)
            if not m:
                raise ValueError("not a sample: " + where)
            name, body, value = m.groups()
            labels = []
            pos = 0
            while body is not None and pos < len(body):
                lm = LABEL_RE.match(body, pos)
                if not lm:
                    raise ValueError("bad labels: " + where)
                unescaped = re.sub(r"\\.", lambda e: _UNESCAPE.get(e.group(0), e.group(0)), lm.group(2))
                labels.append((lm.group(1), unescaped))
                pos = lm.end()
            if not VALUE_RE.match(value):
                raise ValueError("bad value: " + where)
            key = (name, frozenset(labels))
            if key in self.samples:
                raise ValueError("sample given twice: " + where)
            if self.family(name) not in self.types:
                raise ValueError("sample before (or without) its TYPE: " + where)
            self.samples[key] = float(value)

    def family(self, name):
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)] if name.endswith(suffix) else None
            if base and self.types.get(base) == "histogram":
                return base
        return name

    def get(self, name, **labels):
        """The value of one sample, or None when there is no such sample."""
        return self.samples.get((name, frozenset(labels.items())))

    def peers(self, name):
        """{peer: value} of a per-neighbour metric."""
        return {dict(k[1])["peer"]: v for k, v in self.samples.items()
                if k[0] == name and dict(k[1]).get("peer") is not None
                and len(k[1]) == 1}

    def total(self, name, **labels):
        """Sum of the samples of `name` whose labels include `labels`."""
        want = set(labels.items())
        return sum(v for k, v in self.samples.items() if k[0] == name and want <= set(k[1]))
