"""Drives an etcd v3 endpoint with the PyPI `etcd3` client (python-etcd3):
watches, leases and locks, as a user of that library would. Run through
scripts/python-etcd3-check, which makes the venv.

Every wait is bounded. Keys live under a prefix unique to the run, so runs
do not see each other's keys. Prints one PASS/FAIL line per check, then
    python-etcd3 check: N passed, M failed (watch: a/b, lease: c/d, lock: e/f)
and exits 1 if any check failed.
"""

import queue
import sys
import threading
import time
import traceback
import uuid

import etcd3
import etcd3.events

WAIT_S = 10.0  # the longest any single expected event may take


def pump(iterator):
    """Moves a blocking watch iterator's events into a queue, from a thread."""
    q = queue.Queue()

    def run():
        try:
            for ev in iterator:
                q.put(ev)
        except Exception as e:  # the iterator ends with an error on cancel in some versions
            q.put(e)
        q.put(StopIteration())

    threading.Thread(target=run, daemon=True).start()
    return q


def next_event(q, what):
    try:
        ev = q.get(timeout=WAIT_S)
    except queue.Empty:
        raise AssertionError(f"no {what} within {WAIT_S}s")
    if isinstance(ev, Exception) and not isinstance(ev, StopIteration):
        raise AssertionError(f"watch failed waiting for {what}: {ev!r}")
    return ev


def expect(q, kind, key, value=None):
    ev = next_event(q, f"{kind.__name__} {key}")
    assert isinstance(ev, kind), f"expected {kind.__name__} on {key}, got {ev!r}"
    assert ev.key == key.encode(), f"expected key {key}, got {ev.key!r}"
    if value is not None:
        assert ev.value == value.encode(), f"{key}: expected value {value}, got {ev.value!r}"
    return ev


def revision_of(put_response):
    return put_response.header.revision


class Check:
    def __init__(self, client, prefix):
        self.c = client
        self.p = prefix

    # --- watch ------------------------------------------------------------

    def watch_put_and_delete(self):
        k = self.p + "w/key"
        events, cancel = self.c.watch(k)
        q = pump(events)
        time.sleep(0.3)  # the watch is created on the stream before the put
        self.c.put(k, "v1")
        self.c.put(k, "v2")
        self.c.delete(k)
        expect(q, etcd3.events.PutEvent, k, "v1")
        expect(q, etcd3.events.PutEvent, k, "v2")
        expect(q, etcd3.events.DeleteEvent, k)
        cancel()

    def watch_prefix(self):
        pre = self.p + "wp/"
        events, cancel = self.c.watch_prefix(pre)
        q = pump(events)
        time.sleep(0.3)
        self.c.put(pre + "a", "1")
        self.c.put(self.p + "wq/outside", "x")  # not under the prefix
        self.c.put(pre + "b", "2")
        self.c.delete(pre + "a")
        expect(q, etcd3.events.PutEvent, pre + "a", "1")
        expect(q, etcd3.events.PutEvent, pre + "b", "2")
        expect(q, etcd3.events.DeleteEvent, pre + "a")
        cancel()

    def watch_from_past_revision(self):
        k = self.p + "wr/key"
        first = revision_of(self.c.put(k, "old1"))
        self.c.put(k, "old2")
        self.c.delete(k)
        self.c.put(k, "old3")
        # Replays history from `first`, then goes on live.
        events, cancel = self.c.watch(k, start_revision=first)
        q = pump(events)
        e1 = expect(q, etcd3.events.PutEvent, k, "old1")
        assert e1.mod_revision == first, f"mod_revision {e1.mod_revision} != {first}"
        expect(q, etcd3.events.PutEvent, k, "old2")
        expect(q, etcd3.events.DeleteEvent, k)
        expect(q, etcd3.events.PutEvent, k, "old3")
        self.c.put(k, "live")
        expect(q, etcd3.events.PutEvent, k, "live")
        cancel()

    def watch_cancel(self):
        k = self.p + "wc/key"
        events, cancel = self.c.watch(k)
        q = pump(events)
        time.sleep(0.3)
        self.c.put(k, "before")
        expect(q, etcd3.events.PutEvent, k, "before")
        cancel()
        end = next_event(q, "the end of the cancelled watch")
        assert isinstance(end, StopIteration), f"event after cancel: {end!r}"
        # A callback watch, cancelled by id: no more calls after the cancel.
        seen = queue.Queue()
        wid = self.c.add_watch_callback(k, seen.put)
        time.sleep(0.3)
        self.c.put(k, "cb")
        resp = seen.get(timeout=WAIT_S)
        assert [e.value for e in resp.events] == [b"cb"], f"callback got {resp!r}"
        self.c.cancel_watch(wid)
        time.sleep(0.3)
        self.c.put(k, "after")
        time.sleep(1.0)
        assert seen.empty(), f"callback called after cancel_watch: {seen.get()!r}"

    # --- leases -----------------------------------------------------------

    def lease_grant_attach_ttl(self):
        k = self.p + "l/attached"
        lease = self.c.lease(30)
        assert lease.id > 0, f"lease id {lease.id}"
        self.c.put(k, "v", lease=lease)
        value, meta = self.c.get(k)
        assert value == b"v", f"get {k}: {value!r}"
        assert meta.lease_id == lease.id, f"key lease {meta.lease_id} != {lease.id}"
        assert lease.granted_ttl == 30, f"granted_ttl {lease.granted_ttl}"
        assert 0 < lease.remaining_ttl <= 30, f"remaining_ttl {lease.remaining_ttl}"
        assert lease.keys == [k.encode()], f"time-to-live keys {lease.keys!r}"
        # python-etcd3 has no lease list; its TimeToLive call with keys by id:
        info = self.c.get_lease_info(lease.id)
        assert info.ID == lease.id and info.grantedTTL == 30, f"lease info {info!r}"
        assert list(info.keys) == [k.encode()], f"lease info keys {info.keys!r}"
        lease.revoke()

    def lease_refresh(self):
        lease = self.c.lease(5)
        time.sleep(2)
        before = lease.remaining_ttl
        assert before <= 4, f"remaining_ttl {before} after 2 s of a 5 s lease"
        responses = lease.refresh()
        assert responses and responses[0].TTL == 5, f"keepalive {responses!r}"
        after = lease.remaining_ttl
        assert after >= 4, f"remaining_ttl {after} right after a refresh (was {before})"
        # refresh_lease is the same call by id.
        responses = list(self.c.refresh_lease(lease.id))
        assert responses[0].ID == lease.id, f"keepalive id {responses[0].ID}"
        lease.revoke()

    def lease_revoke_deletes_keys(self):
        k1, k2 = self.p + "lr/a", self.p + "lr/b"
        lease = self.c.lease(60)
        self.c.put(k1, "1", lease=lease)
        self.c.put(k2, "2", lease=lease)
        events, cancel = self.c.watch_prefix(self.p + "lr/")
        q = pump(events)
        time.sleep(0.3)
        self.c.revoke_lease(lease.id)
        got = {expect_delete(q).key for _ in range(2)}
        assert got == {k1.encode(), k2.encode()}, f"delete events {got!r}"
        cancel()
        assert self.c.get(k1)[0] is None, f"{k1} survived the revoke"
        assert self.c.get(k2)[0] is None, f"{k2} survived the revoke"
        assert lease.remaining_ttl == -1, f"revoked lease ttl {lease.remaining_ttl}"

    def lease_expires(self):
        k = self.p + "le/short"
        lease = self.c.lease(2)
        start = time.monotonic()
        self.c.put(k, "v", lease=lease)
        gone_at = None
        while time.monotonic() - start < 2 + 8:
            if self.c.get(k)[0] is None:
                gone_at = time.monotonic() - start
                break
            time.sleep(0.1)
        assert gone_at is not None, "the key of a 2 s lease was still there after 10 s"
        # etcd rounds a lease up to its minimum TTL of 2 s and never expires early.
        assert gone_at >= 1.8, f"the key of a 2 s lease was gone after {gone_at:.2f}s"

    # --- locks ------------------------------------------------------------

    def lock_serializes(self):
        name = self.p + "lk/serial"
        log = []
        log_mutex = threading.Lock()
        errors = []

        def worker(tag):
            try:
                for _ in range(3):
                    with self.c.lock(name, ttl=10):
                        with log_mutex:
                            log.append(("start", tag))
                        time.sleep(0.2)
                        with log_mutex:
                            log.append(("end", tag))
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "lock workers still running after 60 s"
        assert not errors, f"lock worker failed: {errors[0]!r}"
        assert len(log) == 12, f"log {log}"
        for i in range(0, len(log), 2):
            s, e = log[i], log[i + 1]
            assert s[0] == "start" and e == ("end", s[1]), f"interleaved at {i}: {log}"

    def lock_acquire_timeout(self):
        name = self.p + "lk/timeout"
        first = self.c.lock(name, ttl=10)
        second = self.c.lock(name, ttl=10)
        assert first.acquire(timeout=5), "the first lock was not acquired"
        assert first.is_acquired(), "is_acquired is false for a held lock"
        start = time.monotonic()
        got = second.acquire(timeout=1)
        waited = time.monotonic() - start
        assert not got, "the second lock was acquired while the first was held"
        assert 0.8 <= waited < 6, f"acquire(timeout=1) returned after {waited:.2f}s"
        # Released in 0.5 s: a waiter with a long timeout gets it then.
        threading.Timer(0.5, first.release).start()
        start = time.monotonic()
        assert second.acquire(timeout=10), "the second lock never got the released lock"
        waited = time.monotonic() - start
        assert waited < 8, f"took {waited:.2f}s to get a released lock"
        assert not first.is_acquired(), "the first lock still says acquired"
        second.release()


def expect_delete(q):
    ev = next_event(q, "a delete")
    assert isinstance(ev, etcd3.events.DeleteEvent), f"expected a delete, got {ev!r}"
    return ev


GROUPS = {
    "watch": ["watch_put_and_delete", "watch_prefix", "watch_from_past_revision", "watch_cancel"],
    "lease": ["lease_grant_attach_ttl", "lease_refresh", "lease_revoke_deletes_keys", "lease_expires"],
    "lock": ["lock_serializes", "lock_acquire_timeout"],
}


def main():
    endpoint = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:2379"
    only = sys.argv[2] if len(sys.argv) > 2 else ""
    host, port = endpoint.rsplit(":", 1)
    client = etcd3.client(host=host, port=int(port), timeout=15)
    prefix = f"python-etcd3-check/{uuid.uuid4().hex[:8]}/"
    check = Check(client, prefix)
    tally = {}
    failed = 0
    for group, names in GROUPS.items():
        for name in names:
            if only and only not in name:
                continue
            start = time.monotonic()
            try:
                getattr(check, name)()
                ok, why = True, ""
            except Exception as e:
                ok, why = False, f"{type(e).__name__}: {e}"
                if "-v" in sys.argv:
                    traceback.print_exc()
            secs = time.monotonic() - start
            p, t = tally.get(group, (0, 0))
            tally[group] = (p + ok, t + 1)
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'}  {group:6} {name:28} {secs:5.1f}s  {why}", flush=True)
    try:
        client.delete_prefix(prefix)
    except Exception:
        pass
    passed = sum(p for p, _ in tally.values())
    groups = ", ".join(f"{g}: {p}/{t}" for g, (p, t) in tally.items())
    print(f"python-etcd3 check: {passed} passed, {failed} failed ({groups})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
