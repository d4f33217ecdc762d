"""Records dropped while the state loads stay dropped (README "Durable
state": records dropped by max_records or record_ttl_s are journaled as
drops and do not come back).

A start loads the snapshot and journals into the table before the journal
is open. A record the table evicts then (past limits.max_records) or
refuses (already past limits.record_ttl_s) must still get a DROP on disk,
or the next start without the limit, or compaction, brings it back. A
client evicted during the load but stored again by a later record of the
same load is held, and must not be dropped.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_state_drops
"""

import time
import unittest
import uuid

from herdtest import HerdTestCase, free_ports, wait_until


def uid(tag):
    """A client id prefix no other test uses."""
    return "sd-%s-%s" % (tag, uuid.uuid4().hex[:8])


class LoadDropTest(HerdTestCase):

    def lone(self, limits=None):
        admin = free_ports(1)[0]
        herd = self.make_herd(servers=["Bailey"], limits=limits,
                              extra={"state_dir": "state", "fsync": "always",
                                     "servers": {"Bailey": {"admin_port": admin}}})
        herd.start("Bailey")
        return herd

    def restart(self, herd, **limits):
        """Stops Bailey cleanly, sets these limits (None: the default) and
        starts it again."""
        self.assertEqual(herd.stop("Bailey"), 0)
        for key, value in limits.items():
            if value is None:
                herd.topology.setdefault("limits", {}).pop(key, None)
            else:
                herd.topology.setdefault("limits", {})[key] = value
        herd.write_topology()
        herd.start("Bailey")

    def dropped_total(self, herd):
        return herd.metrics("Bailey")[("herd_records_dropped_total", frozenset())]

    def held(self, herd, cids):
        """The client ids of `cids` Bailey holds, in their order."""
        records = herd.records("Bailey", cids)
        return [c for c in cids if records[c] is not None]

    def test_evicted_at_load_by_max_records_stay_gone(self):
        herd = self.lone()
        prefix = uid("max")
        cids = [("%s-%d" % (prefix, i)).encode() for i in range(10)]
        for i, cid in enumerate(cids):
            self.iamat_at(herd, "Bailey", cid, t=b"%d.000000001" % (1700000000 + i))
        # The first client again, received last: the load evicts it, then a
        # later journal record of the same load stores it again.
        again = self.iamat_at(herd, "Bailey", cids[0], t=b"1700000100.000000001")

        # Loading with room for 4: the 7 received first are dropped in turn
        # (c0 by c4, c1..c5 by c5..c9, then c6 by c0 again).
        self.restart(herd, max_records=4)
        kept = [cids[0]] + cids[7:]
        self.assertEqual(self.held(herd, cids), kept)
        self.assertEqual(self.dropped_total(herd), 7)

        # Without the limit, what the load dropped stays dropped, and what
        # it held (c0 too) is still there.
        self.restart(herd, max_records=None)
        self.assertEqual(self.held(herd, cids), kept)
        self.assertEqual(herd.records("Bailey", [cids[0]])[cids[0]], again)
        self.assertEqual(self.dropped_total(herd), 0)

        # And once more: a start that drops nothing writes nothing that
        # would change it.
        self.restart(herd)
        self.assertEqual(self.held(herd, cids), kept)

    def test_expired_while_down_stay_gone(self):
        herd = self.lone()
        prefix = uid("ttl")
        cids = [("%s-%d" % (prefix, i)).encode() for i in range(5)]
        for cid in cids:
            self.iamat_at(herd, "Bailey", cid)
        stored = time.time()
        # Their receive times more than a second behind the clock: the load
        # with record_ttl_s 1 refuses every one.
        wait_until(lambda: time.time() >= stored + 3, timeout=10)
        self.restart(herd, record_ttl_s=1)
        self.assertEqual(self.held(herd, cids), [])

        # With the ttl off again they do not come back.
        self.restart(herd, record_ttl_s=None)
        self.assertEqual(self.held(herd, cids), [])


if __name__ == "__main__":
    unittest.main()
