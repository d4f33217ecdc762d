"""Several connections that claim one neighbour's name (issue 18 item 6,
PROTOCOL.md section 7): libzmq's ROUTER never reads a connection whose
routing id is already connected (no handover), so whatever such a
connection queued stays as long as it does (libzmq#4503). The ROUTER's
receive queue holds one message per connection, so each of them can make
the server hold about two frames at most, not a queue of them.

Bailey and Campbell run and are linked; Bailey's other neighbour, Bona, is
in the topology but down, and four raw connections all named Bona send
frames just under the cap to Bailey's peer port, reconnecting whenever one
stalls. Bailey's peak RSS stays bounded (plain builds only: ASan keeps
freed memory in quarantine), it keeps serving clients and Campbell's
reports, and the real Bona links once it starts. Every wait is a
condition with a deadline.
"""

import re
import socket
import threading
import time

from herdtest import HerdTestCase, sanitized_server, status_kb, wait_until
from peerwire import Zmtp, zmtp_frame_header

LINK_TIMEOUT = 10
SEEN_TIMEOUT = 10
ATTACKERS = 4
ATTACK_S = 10
FRAME = 4 * 1024 * 1024 - 64       # just under HERD_WIRE_MAX_FRAME
PEAK_LIMIT_KB = 200 * 1024


def uid(tag):
    return ("peer-ident-%s-%d" % (tag, time.monotonic_ns())).encode()


class PeerIdentTest(HerdTestCase):

    def setUp(self):
        self.herd = self.make_herd(servers=["Bailey", "Bona", "Campbell"],
                                   links=[("Bailey", "Bona"), ("Bailey", "Campbell")],
                                   extra={"state_dir": None})
        self.herd.start("Bailey")
        self.herd.start("Campbell")
        self.herd.wait_log("Bailey", re.compile(r"(?m)link to Campbell up$"), LINK_TIMEOUT)
        self.herd.wait_log("Campbell", re.compile(r"(?m)link to Bailey up$"), LINK_TIMEOUT)
        self.port = self.herd.peer_port("Bailey")

    def attack(self):
        """ATTACKERS connections named Bona send near-cap frames for
        ATTACK_S seconds; a connection that stalls for 3 s is closed and
        replaced by a new one. Returns frames sent."""
        stop = time.monotonic() + ATTACK_S
        sent = [0]
        chunk = b"\x00" * (1 << 20)

        def one():
            while time.monotonic() < stop:
                try:
                    z = Zmtp(self.port, b"Bona", timeout=3)
                except (AssertionError, OSError):
                    time.sleep(0.05)
                    continue
                try:
                    while time.monotonic() < stop:
                        z.sock.sendall(zmtp_frame_header(0x00, FRAME))
                        left = FRAME
                        while left > 0:
                            n = min(left, len(chunk))
                            z.sock.sendall(chunk[:n])
                            left -= n
                        sent[0] += 1
                except (socket.timeout, OSError):
                    pass
                z.close()

        threads = [threading.Thread(target=one) for _ in range(ATTACKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(ATTACK_S + 30)
        return sent[0]

    def test_connections_sharing_a_down_neighbours_name_hold_little(self):
        sent = self.attack()
        self.assertGreater(sent, 10, "the attack sent almost nothing")
        self.assertTrue(self.herd.running("Bailey"), "Bailey died under the attack")
        peak = status_kb(self.herd.pid("Bailey"), "VmHWM")
        if not sanitized_server():
            self.assertLess(peak, PEAK_LIMIT_KB, "peak RSS %d kB under %d connections named Bona" % (peak, ATTACKERS))
        # Clients are served, and Campbell's reports still reach Bailey.
        cid = uid("campbell")
        at = self.iamat_at(self.herd, "Campbell", cid)
        wait_until(lambda: self.stored_at(self.herd, "Bailey", cid) == at, SEEN_TIMEOUT,
                   msg="a report at Campbell did not reach Bailey after the attack")
        cid = uid("bailey")
        self.iamat_at(self.herd, "Bailey", cid)
        # The real Bona links and is heard.
        self.herd.start("Bona")
        self.herd.wait_log("Bona", re.compile(r"(?m)link to Bailey up$"), LINK_TIMEOUT)
        cid = uid("bona")
        at = self.iamat_at(self.herd, "Bona", cid)
        wait_until(lambda: self.stored_at(self.herd, "Bailey", cid) == at, 40,
                   msg="Bona's report never reached Bailey after the attack")
