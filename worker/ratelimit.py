"""`spec.rateLimit` inside one worker: token buckets for requests and bytes per second, shared by all of
the pod's transfers and listings, and the share of the job-wide limits this pod may use.

The operator splits the CopyJob's limits over its worker pods (`ferry.operator.ratesplit`) and sends each
running pod its share (`PUT /limits`, `statusserver.py`). A pod starts with the latest share the operator
wrote into the progress ledger (mounted), else the one computed when its Job was made (`SHARE_ENV`); see
`starting_share`. `ferry run` is the whole job in one process: it uses the spec's limits as they are.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.model.copyjob import RateLimit

#: The share computed when the Job was created (`render.render_job`): what a pod uses when nothing newer
#: is known.
SHARE_ENV = "FERRY_RATE_SHARE"
#: The per-CopyJob secret a `PUT /limits` must carry (`Authorization: Bearer ...`).
TOKEN_ENV = "FERRY_LIMITS_TOKEN"
#: The key of the progress ConfigMap (a file where it is mounted) that holds the latest share: pods
#: started after an edit of the limits or of parallelism begin with the new share.
LATEST_SHARE_KEY = "rateShare"
#: Most a share document takes (a real one is under 80 bytes).
SHARE_MAX_BYTES = 1024
#: A token shorter than this is not one the operator made (it makes 43 characters); longer is refused
#: too, so a header of any size is never compared.
TOKEN_MIN_LENGTH, TOKEN_MAX_LENGTH = 32, 256
#: The CRD's bounds on the job-wide limits; no share is larger.
MAX_REQUESTS_PER_SECOND = 1_000_000
MAX_BYTES_PER_SECOND = 2**63 - 1
#: Seconds of debt too small to wait for.
RESOLUTION = 1e-6


@dataclass(frozen=True)
class RateShare:
    """Requests and bytes per second one worker may use (0: unlimited). Requests may be fractional: a
    job-wide 1 request/s over 4 pods is 0.25 each."""

    requests_per_second: float = 0.0
    bytes_per_second: int = 0

    @classmethod
    def of(cls, limit: RateLimit) -> RateShare:
        return cls(float(limit.requests_per_second), int(limit.bytes_per_second))

    def as_json(self) -> dict[str, Any]:
        return {"requestsPerSecond": self.requests_per_second, "bytesPerSecond": self.bytes_per_second}

    def encode(self) -> str:
        return json.dumps(self.as_json(), separators=(",", ":"))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def parse_share(text: str | bytes) -> RateShare:
    """A share document, checked strictly: a JSON object of exactly `requestsPerSecond` (a number) and
    `bytesPerSecond` (an integer), both finite, at least 0 and at most the CRD's bounds. Raises ValueError
    with Ferry's words only (the text itself may come from anywhere and is never quoted)."""
    if len(text) > SHARE_MAX_BYTES:
        raise ValueError(f"a share takes at most {SHARE_MAX_BYTES} bytes")
    try:
        raw = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: a thousand nested brackets
        raise ValueError("a share is a JSON object") from exc
    if not isinstance(raw, dict) or set(raw) != {"requestsPerSecond", "bytesPerSecond"}:
        raise ValueError("a share has exactly the fields requestsPerSecond and bytesPerSecond")
    requests, data = raw["requestsPerSecond"], raw["bytesPerSecond"]
    if isinstance(requests, bool) or not isinstance(requests, int | float):
        raise ValueError("requestsPerSecond is a number")
    # Floats only: an integer of a thousand digits overflows a float, and is refused by its bound below.
    if isinstance(requests, float) and not math.isfinite(requests):
        raise ValueError("requestsPerSecond is a finite number")
    if isinstance(data, bool) or not isinstance(data, int):
        raise ValueError("bytesPerSecond is an integer")
    if not 0 <= requests <= MAX_REQUESTS_PER_SECOND:
        raise ValueError(f"requestsPerSecond is between 0 and {MAX_REQUESTS_PER_SECOND}")
    if not 0 <= data <= MAX_BYTES_PER_SECOND:
        raise ValueError(f"bytesPerSecond is between 0 and {MAX_BYTES_PER_SECOND}")
    return RateShare(float(requests), data)


def starting_share(env: Mapping[str, str], progress_dir: str | None) -> RateShare | None:
    """The share a worker pod starts with: the latest in the mounted progress ledger, else the one its
    Job was made with; None when there is neither (a Job of an older operator: the spec's limits apply as
    they are). The ledger is a ConfigMap the namespace's users can edit: read bounded, checked strictly."""
    if progress_dir:
        try:
            with (Path(progress_dir) / LATEST_SHARE_KEY).open("rb") as file:
                return parse_share(file.read(SHARE_MAX_BYTES + 1))
        except (OSError, ValueError):
            pass
    try:
        return parse_share(env.get(SHARE_ENV) or "")
    except ValueError:
        return None


def limits_token(env: Mapping[str, str]) -> str | None:
    """The token `PUT /limits` must carry; None (the endpoint answers 404) when the Job has none."""
    token = env.get(TOKEN_ENV) or ""
    # The operator makes URL-safe base64 (`secrets.token_urlsafe`); anything else is not its token.
    urlsafe = token.isascii() and all(c.isalnum() or c in "-_" for c in token)
    return token if urlsafe and TOKEN_MIN_LENGTH <= len(token) <= TOKEN_MAX_LENGTH else None


class TokenBucket:
    """Blocks callers so that, over any second, at most ``rate`` tokens are taken (burst of one second).

    A rate of 0 means unlimited. Taking more tokens than the burst size is allowed: the caller waits
    until the debt is paid, so large parts are paced rather than refused. Callers are served in the order
    they came (each holds a ticket: the running total of tokens taken up to and including its own).

    `set_rate` applies at once, to waiting callers too: what the old rate earned until now is kept, a
    debt stays a debt (paid at the new rate), and a saved-up burst is cut to one second of the new rate.
    A change never hands out a fresh burst, so changing the rate often cannot raise the pace above it.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._rate = max(0.0, float(rate))
        self._clock = clock
        #: Tests pass a fake sleep (called without the lock, so it may call `set_rate`); by default
        #: waiters wait on the condition, which `set_rate` wakes.
        self._sleep = sleep
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stamp = clock()
        self._taken = 0.0
        self._credit = self._rate  # a full bucket at the start: one second of burst

    @property
    def rate(self) -> float:
        return self._rate

    def _refill(self, now: float) -> None:
        if self._rate > 0:
            self._credit = min(self._credit + (now - self._stamp) * self._rate, self._taken + self._rate)
        self._stamp = now

    def set_rate(self, rate: float) -> None:
        rate = max(0.0, float(rate))
        with self._changed:
            self._refill(self._clock())
            if self._rate <= 0 < rate:
                # Coming from unlimited: nothing was counted, so nothing was saved up either.
                self._credit = self._taken
            elif rate > 0:
                self._credit = min(self._credit, self._taken + rate)
            self._rate = rate
            self._changed.notify_all()

    def take(self, amount: float = 1.0) -> float:
        """Take ``amount`` tokens, waiting as needed; returns the seconds waited."""
        with self._changed:
            if self._rate <= 0:
                return 0.0
            start = self._clock()
            self._refill(start)
            self._taken += amount
            ticket = self._taken
            while self._rate > 0:
                self._refill(self._clock())
                wait = (ticket - self._credit) / self._rate
                # Below a microsecond is float rounding of clock differences, not a debt: waiting
                # for it could spin without the clock moving.
                if wait < RESOLUTION:
                    break
                self._pause(wait)
            return self._clock() - start

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` or until the rate changes; called with the lock held."""
        if self._sleep is None:
            self._changed.wait(seconds)
            return
        self._lock.release()
        try:
            self._sleep(seconds)
        finally:
            self._lock.acquire()
