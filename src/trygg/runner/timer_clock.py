"""How far absence timers may run on the wall clock: the receipt-delay correction.

After an outage the broker delivers what it queued, oldest first. While that
backlog is worked off, a device's newer events may still be waiting; running
timers to the wall clock would report every device "offline" and every home
"inactive". So timers run to the wall clock less the *smallest* delay (receipt
time - event time) seen in the last ``window_s`` seconds: one device sending
fresh events is enough to show that trygg is live, and with nothing received
the wall clock rules.

One class for both runners (issue 17, "one timer clock"): the embedded runner
keeps one, fed with each batch's smallest delay; the distributed worker keeps
one per events partition, fed with each event it applies. It does no I/O and
reads no clock: every time is passed in (``at``: a monotonic reading, for the
window; ``now``: the wall clock).
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

RECEIPT_WINDOW_S = 2.0


class ReceiptClock:
    """The wall clock less the smallest receipt delay of the last ``window_s`` seconds."""

    __slots__ = ("_lags", "window_s")

    def __init__(self, window_s: float = RECEIPT_WINDOW_S) -> None:
        self.window_s = window_s
        # (at, delay), delays increasing front to back: a sliding-window minimum
        self._lags: deque[tuple[float, timedelta]] = deque()

    def note(self, delay: timedelta, at: float) -> None:
        """Record a delay (receipt time - event time) seen at monotonic time ``at``.

        A delay at least as large as a newer one can never be the minimum again,
        so it is dropped: constant time per call, however many arrive in the
        window. Callers that see many events at once note the smallest (the
        embedded runner: once per batch)."""
        lags = self._lags
        while lags and lags[-1][1] >= delay:
            lags.pop()
        lags.append((at, delay))

    def delay(self, at: float) -> timedelta | None:
        """The smallest delay noted within the window before ``at`` (None: none)."""
        lags = self._lags
        horizon = at - self.window_s
        while lags and lags[0][0] < horizon:
            lags.popleft()
        return lags[0][1] if lags else None

    def clock(self, now: datetime, at: float) -> datetime:
        """How far timers may run: ``now`` less the window's smallest delay (never ahead
        of ``now``: a device clock ahead gives a negative delay, which counts as none)."""
        d = self.delay(at)
        if d is None:
            return now
        return now - max(timedelta(0), d)
