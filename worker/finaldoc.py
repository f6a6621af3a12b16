"""A stopped worker's last `/status` document, and the operator's word that it recorded it.

Where it sits: a worker pod stopped by SIGTERM (a suspension, fewer pods, an eviction) lets its transfers
end, then answers `/status` with its final counts and resume point under a name only that document has.
The operator records them in the progress ledger and sends the name back (`PUT /recorded`, with the
CopyJob's token; `statusserver`). Only then, or at the grace period's end, does the worker exit. A read
alone proves nothing: a pass that read the answer can still fail before its ledger write, and the shard's
next pod would count as skipped what this pod copied after the last point recorded.
"""

from __future__ import annotations

import hmac
import secrets
import threading


class FinalDocument:
    """The name of this worker's final document, and whether the operator has said it recorded it."""

    def __init__(self) -> None:
        self.name = secrets.token_hex(16)
        self._recorded = threading.Event()

    def acknowledge(self, name: str) -> None:
        """The operator recorded the document called ``name``; another name (an older pod's, a guess)
        changes nothing."""
        if hmac.compare_digest(name.encode(), self.name.encode()):
            self._recorded.set()

    def wait(self, seconds: float) -> bool:
        """Whether the operator said so within ``seconds``."""
        return self._recorded.wait(seconds)
