"""One subscriber of the head's event stream per kernel, feeding every open widget.

The subscription's callback runs on the runtime's I/O thread, so it only appends the event
to a queue. The feed's own thread wakes every ``TICK_S`` (0.1 s: at most ten updates a second
per widget, however many events arrived), applies what came to the shared ``Tables`` and
hands each view the ids that changed; the view sends a delta if it has one. On a sequence
gap (``EVENTS_LOST``) each view resyncs from the tables.

The subscription starts with the first view, replaying the history the head still keeps (so
a widget opened after the work started sees it), and closes with the last one: a kernel
without widgets open pays nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Any, Protocol

from nbcluster.widgets.tables import Changes, Tables

#: Seconds between two updates of the widgets (the coalescing period).
TICK_S = 0.1


class View(Protocol):
    """What the feed asks of an open widget (called on the feed's thread)."""

    def changed(self, tables: Tables, changes: Changes) -> None: ...

    def tick(self, tables: Tables) -> None: ...

    @property
    def finished(self) -> bool: ...


class Feed:
    def __init__(self) -> None:
        self.tables = Tables()
        self._queue: deque[Any] = deque()
        self._views: list[View] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._sub: Any = None
        self._thread: threading.Thread | None = None
        #: set after the history replayed at subscription was applied
        self.caught_up = threading.Event()
        self._catch_up_seq = 0
        #: the sequence number of the last event applied
        self.applied_seq = 0
        #: held while the views are updated: hold it to change a view from another thread
        self.lock = threading.RLock()

    def attach(self, view: View) -> None:
        with self._lock:
            self._views.append(view)
            if self._thread is None or not self._thread.is_alive():
                self._start()

    def detach(self, view: View) -> None:
        with self._lock:
            if view in self._views:
                self._views.remove(view)

    def views(self) -> list[View]:
        with self._lock:
            return list(self._views)

    def _start(self) -> None:
        from nbcluster.util import state

        self.tables = Tables()
        self._queue.clear()
        self.caught_up.clear()
        probe = state.subscribe(lambda _ev: None)  # where the history ends now
        self._catch_up_seq = probe.next_seq
        probe.close()
        self._sub = state.subscribe(self._queue.append, from_seq=1)
        self._thread = threading.Thread(target=self._run, name="nbcluster-widgets", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sub = self._sub
        try:
            while True:
                with self._lock:
                    views = list(self._views)
                    if not views:
                        self._thread = None
                        break
                self._step(views)
                self._wake.wait(TICK_S)
        finally:
            sub.close()

    def _step(self, views: list[View]) -> None:
        with self.lock:
            self._step_locked(views)

    def _step_locked(self, views: list[View]) -> None:
        events = []
        q = self._queue
        while q:
            events.append(q.popleft())
        if not self.caught_up.is_set() and (
            (events and events[-1].seq >= self._catch_up_seq - 1) or self._catch_up_seq <= 1
        ):
            self.caught_up.set()
        if events:
            self.applied_seq = events[-1].seq
        changes = self.tables.apply(events) if events else Changes()
        for view in views:
            try:
                if changes:
                    view.changed(self.tables, changes)
                view.tick(self.tables)
            except Exception as e:  # one broken view must not stop the others
                print(f"nbcluster widgets: {type(view).__name__} failed: {e!r}", file=sys.stderr)
            if view.finished:
                self.detach(view)

    def wait_caught_up(self, timeout: float = 10.0) -> bool:
        return self.caught_up.wait(timeout)

    def sync(self, timeout: float = 1.0) -> None:
        """Apply every event the head has now (within ``timeout``), on the calling thread, and
        let the views update: a view about to draw its final state calls this first."""
        from nbcluster.util import state

        try:
            probe = state.subscribe(lambda _ev: None)
        except Exception:
            return
        target = probe.next_seq - 1
        probe.close()
        deadline = time.monotonic() + timeout
        while True:
            self._step(self.views())
            if self.applied_seq >= target or time.monotonic() > deadline:
                return
            time.sleep(0.02)  # events are on their way from the head; bounded by timeout


_feed: Feed | None = None
_feed_lock = threading.Lock()


def feed() -> Feed:
    """The kernel's one feed."""
    global _feed
    with _feed_lock:
        if _feed is None:
            _feed = Feed()
        return _feed
