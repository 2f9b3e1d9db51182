"""One digest connection per kernel, feeding every open widget.

Each widget asks the head for a *digest* of what it shows (``state.subscribe_digests``; the
head's side is ``nbcluster.runtime.observe.digest_service``): its progress counts, its graph, the
nodes. The head follows its own tables, coalesces, and pushes at most one item per widget
per 0.1 s, holding only that widget's changes; so however many events a burst of tasks makes,
the kernel decodes a few small messages a second and forwards them. The items arrive on the
runtime's I/O thread, which only queues them; the feed's thread hands each to its view (under
``lock``), checking each digest's numbering: a view that missed an item asks for the whole
picture again.

A digest is paused while no browser shows its widget (``FedView.on_views``), so a widget
nobody displays costs nothing after its first picture. The connection opens with the first
widget and closes with the last.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Any

#: Seconds between two calls of every view's ``tick`` (rates, ETAs, deferred refreshes).
TICK_S = 1.0


class FedView:
    """What the feed asks of a view: ``on_digest`` for each item (on the feed's thread,
    under ``feed.lock``), ``tick`` about once a second; ``finished`` ends its digest."""

    kind = ""
    finished = False
    did: str | None = None
    widget: Any = None
    #: browser views showing the widget (each says so when it renders, and when it goes)
    views = 0

    def spec(self) -> dict[str, Any]:
        return {}

    def on_digest(self, payload: Any, full: bool) -> None:
        raise NotImplementedError

    def tick(self, now: float) -> None:
        """Called about once a second, and once right after each digest item."""

    def show(self) -> None:
        """Put what the view has into the widget's snapshot (a new widget)."""
        raise NotImplementedError

    def on_views(self, n: int) -> None:
        """A browser view of the widget opened or closed (``n`` are open now)."""
        was, self.views = self.views, n
        if self.did is not None and bool(was) != bool(n) and not self.finished:
            feed().set_live(self.did, n > 0)

    def refresh(self) -> None:
        """Bring a view nobody shows (its digest is paused) up to date now: what a front end
        without widgets displays is its HTML or text, drawn from this."""
        if self.did is None or self.views or self.finished:
            return
        f = feed()
        try:
            payload = f.query(self.did)
        except Exception:  # the cluster is gone: show what we have
            return
        with f.lock:
            self.on_digest(payload, True)
            self.tick(time.time())

    def close(self) -> None:
        if self.did is not None:
            feed().close(self.did)
            self.did = None


class Feed:
    def __init__(self) -> None:
        #: held while a view changes: hold it to touch a view from another thread
        self.lock = threading.RLock()
        self._mu = threading.Lock()
        self._stream: Any = None
        self._views: dict[str, FedView] = {}
        self._seq: dict[str, int] = {}
        self._lost: set[str] = set()
        self._items: deque[list[Any]] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self, view: FedView, live: bool = False) -> Any:
        """Open ``view``'s digest (paused unless ``live``); returns its whole picture."""
        from nbcluster.util import state

        with self._mu:
            if self._stream is None or self._stream.closed:
                self._stream = state.subscribe_digests(self._on_items)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="nbcluster-widgets",
                                                daemon=True)  # fmt: skip
                self._thread.start()
            did, payload = self._stream.open(view.kind, view.spec(), live)
            view.did = did
            self._views[did] = view
            self._seq[did] = 0
        return payload

    def set_live(self, did: str, live: bool) -> None:
        stream = self._stream
        if stream is not None:
            stream.set_live(did, live)

    def request_full(self, did: str) -> None:
        stream = self._stream
        if stream is not None:
            stream.request_full(did)

    def query(self, did: str, **kwargs: Any) -> Any:
        stream = self._stream
        if stream is None:
            raise RuntimeError("no digest connection")
        return stream.query(did, **kwargs)

    def close(self, did: str) -> None:
        with self._mu:
            self._views.pop(did, None)
            self._seq.pop(did, None)
            stream = self._stream
            if stream is None:
                return
            stream.close_digest(did)
            if not self._views:
                stream.close()
                self._stream = None
                self._wake.set()

    def views(self) -> list[FedView]:
        with self._mu:
            return list(self._views.values())

    # -- I/O thread ------------------------------------------------------------------------------
    def _on_items(self, items: list[list[Any]]) -> None:
        self._items.extend(items)
        self._wake.set()

    # -- the feed's thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(TICK_S)
            self._wake.clear()
            with self._mu:
                stream = self._stream
                if (stream is None and not self._views) or (stream is not None and stream.closed):
                    self._thread = None  # nothing to show, or the cluster is gone: no thread
                    return
            self.step()

    def step(self) -> None:
        """Hand every queued item to its view, then let every view tick."""
        q = self._items
        items = [q.popleft() for _ in range(len(q))]
        now = time.time()
        with self.lock:
            for did, seq, full, payload in items:
                view = self._views.get(did)
                if view is None or not self._in_order(did, seq, full):
                    continue
                self._call(view, view.on_digest, payload, full)
            for view in self.views():
                self._call(view, view.tick, now)
                if view.finished:
                    view.close()

    def _in_order(self, did: str, seq: int, full: bool) -> bool:
        """Whether the item continues what the view has; on a gap, ask for the whole picture
        and drop deltas until it comes."""
        last = self._seq.get(did, 0)
        if full:
            if seq <= last:
                return False
            self._lost.discard(did)
        elif seq != last + 1 or did in self._lost:
            if did not in self._lost:
                self._lost.add(did)
                self.request_full(did)
            return False
        self._seq[did] = seq
        return True

    @staticmethod
    def _call(view: FedView, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # one broken view must not stop the others
            print(f"nbcluster widgets: {type(view).__name__} failed: {e!r}", file=sys.stderr)


_feed: Feed | None = None
_feed_lock = threading.Lock()


def feed() -> Feed:
    """The kernel's one feed."""
    global _feed
    with _feed_lock:
        if _feed is None:
            _feed = Feed()
        return _feed
