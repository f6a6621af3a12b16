"""Copy-or-skip decisions against what the destination already holds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ferry.model import Overwrite
from ferry.worker.decide import decide
from ferry.worker.objects import Action, ObjectInfo

OLD = datetime(2024, 1, 1, tzinfo=UTC)
NEW = datetime(2024, 2, 1, tzinfo=UTC)
MD5_A = '"0cc175b9c0f1b6a831c399e269772661"'
MD5_B = '"92eb5ffee6ae2fec3ad71c777531578f"'
MULTI_A = '"d41d8cd98f00b204e9800998ecf8427e-3"'
MULTI_B = '"9e107d9d372bb6826bd81d3542a419d6-5"'


def info(size: int = 10, etag: str = MD5_A, modified: datetime = OLD) -> ObjectInfo:
    return ObjectInfo(key="k", size=size, etag=etag, last_modified=modified)


@pytest.mark.parametrize(
    ("source", "existing", "overwrite", "action", "reason"),
    [
        pytest.param(info(), None, Overwrite.IF_DIFFERENT, Action.COPY, "absent", id="absent-ifDifferent"),
        pytest.param(info(), None, Overwrite.NEVER, Action.COPY, "absent", id="absent-never"),
        pytest.param(info(), None, Overwrite.ALWAYS, Action.COPY, "absent", id="absent-always"),
        pytest.param(info(), info(), Overwrite.ALWAYS, Action.COPY, "always", id="always-even-if-equal"),
        pytest.param(
            info(), info(size=99), Overwrite.NEVER, Action.SKIP, "never", id="never-even-if-different"
        ),
        pytest.param(
            info(size=10),
            info(size=11),
            Overwrite.IF_DIFFERENT,
            Action.COPY,
            "size differs",
            id="size-differs",
        ),
        pytest.param(
            info(), info(), Overwrite.IF_DIFFERENT, Action.SKIP, "same size and ETag", id="same-md5"
        ),
        pytest.param(
            info(), info(etag=MD5_B), Overwrite.IF_DIFFERENT, Action.COPY, "ETag differs", id="different-md5"
        ),
        pytest.param(
            info(etag=MULTI_A, modified=OLD),
            info(etag=MD5_A, modified=NEW),
            Overwrite.IF_DIFFERENT,
            Action.SKIP,
            "destination newer",
            id="source-multipart-dest-newer",
        ),
        pytest.param(
            info(etag=MD5_A, modified=NEW),
            info(etag=MULTI_B, modified=OLD),
            Overwrite.IF_DIFFERENT,
            Action.COPY,
            "source newer",
            id="dest-multipart-dest-older",
        ),
        pytest.param(
            info(etag=MULTI_A, modified=NEW),
            info(etag=MULTI_B, modified=OLD),
            Overwrite.IF_DIFFERENT,
            Action.COPY,
            "source newer",
            id="both-multipart-dest-older",
        ),
        pytest.param(
            info(etag=MULTI_A, modified=OLD),
            info(etag=MULTI_B, modified=OLD),
            Overwrite.IF_DIFFERENT,
            Action.SKIP,
            "destination newer",
            id="both-multipart-same-time",
        ),
        pytest.param(
            info(size=10, etag=MULTI_A, modified=OLD),
            info(size=12, etag=MULTI_A, modified=NEW),
            Overwrite.IF_DIFFERENT,
            Action.COPY,
            "size differs",
            id="multipart-size-differs-wins",
        ),
    ],
)
def test_decide(
    source: ObjectInfo, existing: ObjectInfo | None, overwrite: Overwrite, action: Action, reason: str
) -> None:
    decision = decide(source, existing, overwrite)
    assert decision.action is action
    assert reason in decision.reason
