"""The randomized fault test (PROTOCOL.md section 7's convergence promise; issue 10).

A workload of IAMATs runs at all five servers of the default herd -- a few
hundred client ids, most of them updated many times, and now and then an
exact tie (one id, one client time, two positions) sent to two servers at
once or to one server twice -- while a random fault schedule runs, with up to
three faults at a time:

- kill -9 of one server, or of a server and all its current neighbours at
  once, each restarted later after its own random delay (random orders);
- SIGSTOP / SIGCONT (a pause, sometimes longer than the 3 s heartbeat);
- a reload that removes one or two links, and a later reload that puts them
  back (SIGHUP to the running servers in a random order);
- a disk that fills and empties: each server's state folder is a tmpfs of
  its own, and a ballast file fills one to the last byte and is removed
  later (issue 19). Under fsync "always" that server answers IAMATs "?"
  while its disk is full (never an AT reply for an update not on disk) and
  acknowledges again by itself once the ballast is gone. This kind needs
  mount(8) (root); without it the run says so and goes on without it.

At the end every paused server is resumed, the original topology is written
and reloaded, every dead server is restarted; then, within CONVERGE_S:

1. every server holds the same record (the same AT line, or none) for every
   client id the workload ever sent;
2. every acknowledged update is held: the final record of its client ranks
   at or above it (section 3 order) -- unless every server that held it
   died before passing it on. Tracked conservatively through observations:
   an AT reply is an observation of the update at its origin; after about a
   third of the acknowledged IAMATs the workload also asks another server
   (WHATSAT) what it holds for that client, an observation there. A server's
   record for a client never goes down while it runs, so every observation
   made at a server that was not killed at any time after it (the time is
   taken before the request is sent) must be matched or outranked by the
   final record. An acknowledged update none of whose observers survived may
   be lost (the promise allows it): it is not checked, and counted in the
   output. Pauses and link changes lose nothing, so they never exempt an
   observation.

No server may die except by the schedule's own kill -9, and every server
exits cleanly on SIGTERM at the end (no sanitizer report).

Without the disk kind the topology sets "state_dir": null: a killed server
loses its memory, so nothing here depends on durability. With it, servers
keep their state on their tmpfs under fsync "always" (or HERD_FAULT_STATE),
and a killed server comes back with its own table. There is no Places key
(WHATSAT answers REQUEST_DENIED and still carries the stored AT line).

Environment
    HERD_FAULT_SEED     the seed (printed at the start; random otherwise). The
                        fault schedule and each workload thread's choices
                        follow from it; thread timings do not, so a replay
                        repeats the same faults in the same order, not the
                        same interleaving.
    HERD_FAULT_SECONDS  how long the faults run (default 40; the whole test
                        then takes about 45-60 s). Longer runs by hand.
    HERD_FAULT_KINDS    comma-separated subset of kill,group,pause,unlink,disk,ties
    HERD_FAULT_STATE    always | everysec: servers keep their table on disk
                        (default: no state, so a killed server comes back empty)
                        (default all), to narrow down a failure by hand.

Run: cd tests/integration && HERD_SERVER=.../herd-server python3 -m unittest -v test_faults
"""

import errno
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from herdtest import (AT_RE_B, DEFAULT_LINKS, DEFAULT_SERVERS, HerdError, HerdTestCase,
                      HerdTimeout, at_rank, iamat_line, now_text, wait_until)

CONVERGE_S = 15     # all up, topology restored -> the same records everywhere
REPLY_S = 2.0       # a reply later than this (a paused server) is given up
N_IDS = 300         # distinct client ids
PACE_S = 0.02       # each workload thread's pause between operations
WORKERS = 2         # workload threads
MAX_FAULTS = 3      # faults active at once
KINDS = ("kill", "group", "pause", "unlink", "disk", "ties")
DISK_KIB = 8192     # each server's state tmpfs (the disk kind)
POSITIONS = (b"+34.068930-118.445127", b"+10.000000-020.000000", b"+20.000000-020.000000",
             b"-33.868820+151.209296", b"+51.507351-000.127758")


def neighbours(links, name):
    return {b if a == name else a for a, b in links if name in (a, b)}


class Workload:
    """IAMATs from WORKERS threads at the servers the schedule says are up;
    records every id sent and every acknowledged update."""

    def __init__(self, herd, seed, ties=True, may_refuse=False):
        self.herd = herd
        self.seed = seed
        self.ties = ties         # whether to send ties at all
        self.may_refuse = may_refuse  # "? IAMAT ..." is a valid reply (a full disk)
        self.ids = [b"fault-%d-%03d" % (seed % 100000, i) for i in range(N_IDS)]
        self.lock = threading.Lock()
        self.up = set()          # servers running and not paused (for the next pick)
        self.sent = set()        # every client id sent at least once
        self.acked = []          # (cid, AT line, origin, monotonic time just before sending)
        self.seen = []           # (cid, AT line, server, monotonic time just before the WHATSAT)
        self.bad = []            # replies that are neither an AT line nor a lost connection
        self.counts = {"iamat": 0, "tie2": 0, "tie1": 0, "lost": 0, "whatsat": 0, "refused": 0}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(WORKERS)]

    def set_up(self, name, up):
        with self.lock:
            (self.up.add if up else self.up.discard)(name)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(REPLY_S * 3 + 5)

    # -- one thread
    def run(self, index):
        rng = random.Random(self.seed * 7919 + index)
        conns = {}
        try:
            # The wait is the workload's pace (and its stop signal), not a
            # wait for a condition.
            while not self.stop.wait(PACE_S):
                with self.lock:
                    up = sorted(self.up)
                if not up:
                    continue
                cid, r = rng.choice(self.ids), rng.random()
                t = now_text()
                if not self.ties:
                    r = 1.0
                if r < 0.08 and len(up) >= 2:
                    a, b = rng.sample(up, 2)
                    pa, pb = rng.sample(POSITIONS, 2)
                    self.counts["tie2"] += 1
                    self.exchange(conns, [(a, cid, pa, t), (b, cid, pb, t)])
                elif r < 0.12:
                    a = rng.choice(up)
                    pa, pb = rng.sample(POSITIONS, 2)
                    self.counts["tie1"] += 1
                    self.exchange(conns, [(a, cid, pa, t)])
                    self.exchange(conns, [(a, cid, pb, t)])
                else:
                    self.counts["iamat"] += 1
                    origin = rng.choice(up)
                    acked = self.exchange(conns, [(origin, cid, rng.choice(POSITIONS), t)])
                    others = [n for n in up if n != origin]
                    if acked and others and rng.random() < 0.35:
                        self.look(conns, rng.choice(others), cid)
        finally:
            for c in conns.values():
                c.close()

    def look(self, conns, name, cid):
        """WHATSAT cid at name; records what it holds (an observation)."""
        started = time.monotonic()
        try:
            c = conns.get(name) or conns.setdefault(name, self.herd.connect(name, REPLY_S))
            c.send(b"WHATSAT " + cid + b" 10 1\n")
            reply = c.recv_until(lambda b: (b.startswith(b"? ") and b"\n" in b) or b"\n\n" in b,
                                 REPLY_S)
        except (OSError, HerdError, HerdTimeout):
            self.drop(conns, name)
            return
        self.counts["whatsat"] += 1
        if reply.startswith(b"? "):
            if reply != b"? WHATSAT " + cid + b" 10 1\n":
                self.bad.append((name, cid, reply))
            return
        at = reply.split(b"\n", 1)[0]
        m = AT_RE_B.match(at)
        if not m or m.group(3) != cid or not reply.endswith(b"}\n\n"):
            self.bad.append((name, cid, reply))
            return
        with self.lock:
            self.seen.append((cid, at, name, started))

    def exchange(self, conns, sends):
        """Sends each IAMAT (on the thread's connection to its server), all
        before reading any reply; records the acknowledged ones and returns
        how many there were."""
        with self.lock:
            self.sent.update(cid for _, cid, _, _ in sends)
        started = time.monotonic()
        out = []
        acked = 0
        for name, cid, pos, t in sends:
            line = iamat_line(cid, pos, t) + b"\n"
            try:
                c = conns.get(name) or conns.setdefault(name, self.herd.connect(name, REPLY_S))
                c.send(line)
                out.append((name, cid, pos, t, c))
            except (OSError, HerdError):
                self.drop(conns, name)
        for name, cid, pos, t, c in out:
            try:
                reply = c.recv_line(REPLY_S)
            except (OSError, HerdTimeout):
                self.drop(conns, name)
                continue
            if self.may_refuse and reply == b"? " + iamat_line(cid, pos, t) + b"\n":
                self.counts["refused"] += 1  # not acknowledged: promises nothing
                continue
            m = AT_RE_B.match(reply[:-1])
            if not m or (m.group(1), m.group(3), m.group(4), m.group(5)) != (name.encode(), cid,
                                                                            pos, t):
                self.bad.append((name, cid, reply))
                continue
            with self.lock:
                self.acked.append((cid, reply[:-1], name, started))
            acked += 1
        return acked

    def drop(self, conns, name):
        c = conns.pop(name, None)
        if c:
            c.close()
        self.counts["lost"] += 1


class FaultTest(HerdTestCase):

    def test_random_faults_then_convergence(self):
        env_seed = os.environ.get("HERD_FAULT_SEED")
        seed = int(env_seed) if env_seed else random.SystemRandom().randrange(2**31)
        fault_s = float(os.environ.get("HERD_FAULT_SECONDS") or 40)
        kinds = [k for k in (os.environ.get("HERD_FAULT_KINDS") or ",".join(KINDS)).split(",") if k]
        self.assertLessEqual(set(kinds), set(KINDS), "HERD_FAULT_KINDS")
        self.kinds = [k for k in KINDS if k in kinds and k != "ties"]
        print("\ntest_faults: HERD_FAULT_SEED=%d HERD_FAULT_SECONDS=%g HERD_FAULT_KINDS=%s"
              % (seed, fault_s, ",".join(kinds)), file=sys.stderr, flush=True)
        self.seed = seed
        rng = random.Random(seed)
        # One server is never killed (it may be paused), so that the check
        # of acknowledged updates always has a survivor to hold it to.
        self.keeper = rng.choice(list(DEFAULT_SERVERS))
        # HERD_FAULT_STATE=always|everysec runs the same with durable state
        # (killed servers then come back with their own table).
        state = os.environ.get("HERD_FAULT_STATE")
        if "disk" in self.kinds and not self.can_mount():
            print("test_faults: cannot mount a tmpfs here (not root?): running without the disk kind",
                  file=sys.stderr, flush=True)
            self.kinds.remove("disk")
        disk = "disk" in self.kinds
        if disk:
            herd = self.make_herd(extra={"state_dir": "state", "fsync": state or "always"})
            self.mount_disks(herd)
        else:
            herd = self.make_herd(extra={"fsync": state} if state else {"state_dir": None})
        self.herd = herd
        self.full_disks = set()
        names = list(DEFAULT_SERVERS)
        full = [tuple(link) for link in DEFAULT_LINKS]
        herd.start_all()

        work = Workload(herd, seed, ties="ties" in kinds, may_refuse=disk)
        self.addCleanup(work.finish)
        for name in names:
            work.set_up(name, True)
        self.kills = {name: [] for name in names}  # monotonic times, each taken after the death
        self.dead, self.paused, self.removed = set(), set(), set()
        self.events = []  # (due, seq, kind, arg): restarts, resumes, link restores
        self.seq = 0
        self.done = []    # what the schedule did, for the failure message
        work.start()

        t_end = time.monotonic() + fault_s
        while time.monotonic() < t_end:
            self.check_alive(herd, names)
            now = time.monotonic()
            due = sorted(e for e in self.events if e[0] <= now)
            for event in due:
                self.events.remove(event)
                self.undo(herd, work, names, full, rng, event)
            if self.kinds and len(self.events) < MAX_FAULTS and rng.random() < 0.35:
                self.inject(herd, work, names, full, rng)
            # The schedule's own pacing: the next step is due in 50-300 ms,
            # or at once if the workload stopped (it failed).
            if work.stop.wait(rng.uniform(0.05, 0.3)):
                break
        self.check_alive(herd, names)

        # Heal: the workload stops, paused servers resume, the full topology
        # is reloaded, dead servers restart (in a random order).
        work.finish()
        for name in sorted(self.paused):
            herd.resume(name)
            work.set_up(name, True)
        self.paused.clear()
        self.events.clear()
        self.removed.clear()
        for name in sorted(self.full_disks):
            self.empty_disk(name)
        running = [n for n in names if n not in self.dead]
        rng.shuffle(running)
        marks = herd.reload(running, full)
        restart = sorted(self.dead)
        rng.shuffle(restart)
        for name in restart:
            herd.start(name)
        self.dead.clear()
        self.done.append("heal: reload %s, restart %s" % (running, restart))
        want = "reload: topology applied (5 servers, 6 links)"
        for name, mark in marks.items():
            wait_until(lambda name=name, mark=mark: want in herd.log_since(name, mark), 10,
                       msg=self.why("%s did not apply the restored topology" % name))
        self.check_alive(herd, names)

        self.assertEqual(work.bad, [], self.why("replies of the wrong shape (an IAMAT not "
                                                "answered with its AT line, or a bad WHATSAT "
                                                "reply)"))
        print("test_faults: seed %d: %d faults, %d IAMATs, %d ties at two servers, %d at one, "
              "%d replies lost, %d acked, %d client ids" % (
                  seed, len(self.done), work.counts["iamat"], work.counts["tie2"],
                  work.counts["tie1"], work.counts["lost"], len(work.acked), len(work.sent))
              + ", %d WHATSATs, %d IAMATs answered \"?\" (full disk)" % (
                  work.counts["whatsat"], work.counts["refused"]),
              file=sys.stderr, flush=True)
        final = self.wait_converged(herd, names, sorted(work.sent))

        def survived(server, since):
            return not any(k > since for k in self.kills[server])

        def covered(cid, at):
            return (final[cid] is not None
                    and at_rank(final[cid])[:4] >= at_rank(at)[:4])
        lost = []
        for kind, observations in (("acked", work.acked), ("seen", work.seen)):
            for cid, at, server, since in observations:
                if survived(server, since) and not covered(cid, at):
                    lost.append("  %r %s by %s %r; the herd holds %r"
                                % (cid, kind, server, at, final[cid]))
        # How many acknowledged updates that check reached: the ack itself,
        # or an observation of it (or of something above it) elsewhere.
        vouched = {}
        for cid, at, server, since in work.acked + work.seen:
            if survived(server, since):
                vouched.setdefault(cid, []).append(at_rank(at)[:4])
        checked = sum(any(r >= at_rank(at)[:4] for r in vouched.get(cid, ()))
                      for cid, at, _, _ in work.acked)
        exempt = len(work.acked) - checked
        print("test_faults: converged; %d of %d acked updates checked, %d exempt (every "
              "observer killed later), %d observations, %d clients held"
              % (checked, len(work.acked), exempt, len(work.acked) + len(work.seen),
                 sum(v is not None for v in final.values())),
              file=sys.stderr, flush=True)
        self.assertEqual(lost, [], self.why("%d observed records lost although the server that "
                                            "held them never died after:\n%s"
                                            % (len(lost), "\n".join(lost[:20]))))
        # The run must have exercised something.
        self.assertGreater(checked, 50, self.why("too few acknowledged updates to check (the keeper, "
                                                 "%s, was never killed)" % self.keeper))
        self.assertGreaterEqual(len(self.done), min(5, int(fault_s / 4)),
                                self.why("too few faults"))
        self.assertCleanExit(herd, *names)

    # -- the disks
    @staticmethod
    def can_mount():
        mnt = tempfile.mkdtemp(prefix="herd-mount-probe-")
        try:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt],
                               capture_output=True)
            if r.returncode == 0:
                subprocess.run(["umount", mnt], capture_output=True)
            return r.returncode == 0
        except OSError:
            return False
        finally:
            os.rmdir(mnt)

    def mount_disks(self, herd):
        """A tmpfs of its own as each server's state folder."""
        self.disks = {}
        for name in DEFAULT_SERVERS:
            path = os.path.join(herd.tmpdir, "state", name)
            os.makedirs(path)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dk" % DISK_KIB, "tmpfs", path],
                           check=True, capture_output=True)
            self.disks[name] = path

        def unmount():
            herd.close()
            for path in self.disks.values():
                subprocess.run(["umount", "-l", path], capture_output=True)
        self.addCleanup(unmount)

    def fill_disk(self, name):
        """Writes a ballast file on name's tmpfs until it is full."""
        chunk = b"\xa5" * 65536
        # Unbuffered: the ENOSPC comes from write(2) here, not again from
        # a flush at close.
        with open(os.path.join(self.disks[name], "ballast"), "ab", buffering=0) as f:
            try:
                while f.write(chunk):
                    pass
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
        self.full_disks.add(name)

    def empty_disk(self, name):
        try:
            os.unlink(os.path.join(self.disks[name], "ballast"))
        except FileNotFoundError:
            pass
        self.full_disks.discard(name)

    # -- the schedule
    def why(self, text):
        return "HERD_FAULT_SEED=%d: %s\nschedule:\n  %s" % (self.seed, text,
                                                           "\n  ".join(self.done[-60:]))

    def check_alive(self, herd, names):
        for name in names:
            if name not in self.dead and not herd.running(name):
                self.fail(self.why("%s died without being killed: %s"
                                   % (name, herd.state(name, 1.0))))

    def later(self, delay, kind, arg):
        self.seq += 1
        self.events.append((time.monotonic() + delay, self.seq, kind, arg))

    def current_links(self, full):
        return [link for link in full if link not in self.removed]

    def inject(self, herd, work, names, full, rng):
        alive = [n for n in names if n not in self.dead]
        # single kills and pauses twice as often as the rest
        kind = rng.choice([k for k in self.kinds for _ in range(2 if k in ("kill", "pause") else 1)])
        if kind in ("kill", "group"):
            if kind == "kill":
                victims = [rng.choice(alive)]
            else:
                centre = rng.choice(alive)
                victims = [centre] + sorted(neighbours(self.current_links(full), centre)
                                            & set(alive))
            if len(victims) >= len(alive) or self.keeper in victims:
                return  # somebody stays alive, and the keeper always
            for name in victims:
                work.set_up(name, False)
            herd.kill_many(victims)
            t = time.monotonic()
            for name in victims:
                self.kills[name].append(t)
                self.dead.add(name)
                self.paused.discard(name)
                # its pending resume no longer applies
                self.events = [e for e in self.events if not (e[2] == "resume" and e[3] == name)]
                self.later(rng.uniform(0.2, 4.0), "restart", name)
            self.done.append("%.2f kill -9 %s" % (t, " ".join(victims)))
        elif kind == "pause":
            choices = [n for n in alive if n not in self.paused]
            if not choices:
                return
            name = rng.choice(choices)
            work.set_up(name, False)
            herd.pause(name)
            self.paused.add(name)
            self.later(rng.uniform(0.3, 5.0), "resume", name)
            self.done.append("%.2f pause %s" % (time.monotonic(), name))
        elif kind == "disk":
            choices = [n for n in names if n not in self.full_disks]
            if not choices:
                return
            name = rng.choice(choices)
            self.fill_disk(name)
            self.later(rng.uniform(0.5, 5.0), "empty", name)
            self.done.append("%.2f fill the disk of %s" % (time.monotonic(), name))
        else:
            present = [link for link in full if link not in self.removed]
            cut = rng.sample(present, min(len(present), rng.choice((1, 1, 2))))
            self.removed.update(cut)
            self.reload_running(herd, names, full, rng)
            self.later(rng.uniform(1.0, 6.0), "restore", tuple(cut))
            self.done.append("%.2f unlink %s" % (time.monotonic(), cut))

    def reload_running(self, herd, names, full, rng):
        running = [n for n in names if n not in self.dead]
        rng.shuffle(running)
        herd.reload(running, self.current_links(full))

    def undo(self, herd, work, names, full, rng, event):
        _, _, kind, arg = event
        if kind == "restart":
            herd.start(arg)
            self.dead.discard(arg)
            work.set_up(arg, True)
            self.done.append("%.2f restart %s" % (time.monotonic(), arg))
        elif kind == "resume":
            herd.resume(arg)
            self.paused.discard(arg)
            work.set_up(arg, True)
            self.done.append("%.2f resume %s" % (time.monotonic(), arg))
        elif kind == "empty":
            self.empty_disk(arg)
            self.done.append("%.2f empty the disk of %s" % (time.monotonic(), arg))
        else:
            self.removed.difference_update(arg)
            self.reload_running(herd, names, full, rng)
            self.done.append("%.2f relink %s" % (time.monotonic(), list(arg)))

    # -- the end
    def wait_converged(self, herd, names, cids):
        """Waits until every server holds the same record for every cid;
        returns {cid: that record or None}."""
        last = {}

        def same():
            for name in names:
                last[name] = herd.records(name, cids, timeout=10)
            return all(len({last[n][cid] for n in names}) == 1 for cid in cids)
        try:
            wait_until(same, CONVERGE_S, interval=0.25)
        except HerdTimeout:
            split = []
            for cid in cids:
                held = {n: last[n][cid] for n in names}
                if len(set(held.values())) > 1:
                    split.append("  %r: %s" % (cid, "; ".join(
                        "%s %r" % (n, v) for n, v in sorted(held.items()))))
            self.fail(self.why("%d of %d clients not the same at every server %gs after the "
                               "herd was whole:\n%s" % (len(split), len(cids), CONVERGE_S,
                                                         "\n".join(s[:600] for s in split[:15]))))
        return {cid: last[names[0]][cid] for cid in cids}


if __name__ == "__main__":
    unittest.main()
