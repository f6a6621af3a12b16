"""Which TCP addresses a process listens on, read from /proc (Linux): for tests that hold a server to the
address it is documented to bind."""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from pathlib import Path

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket `pid` listens on, IPv4 and IPv6."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed since the listing
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(match.group(1))
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN and inode in inodes:
                address, port = local.rsplit(":", 1)
                found.add((_address(address), int(port, 16)))
    return found


def _address(hexed: str) -> str:
    """/proc/net/tcp{,6} print addresses as 32-bit words in the host's byte order."""
    words = [bytes.fromhex(hexed[i : i + 8]) for i in range(0, len(hexed), 8)]
    raw = b"".join(w[::-1] if sys.byteorder == "little" else w for w in words)
    return str(ipaddress.ip_address(raw))
