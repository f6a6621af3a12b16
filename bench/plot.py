"""Plot ferry's concurrency and objects/s over time for one scenario (run by bench/run.py).

Runs with the interpreter of the bench's own matplotlib venv, never the project's: `plot.py DATA.json OUT.png`.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def rates(points: list[tuple[float, float]], window: float = 5.0) -> tuple[list[float], list[float]]:
    ts, rs = [], []
    for i, (t, n) in enumerate(points):
        j = i
        while j > 0 and t - points[j - 1][0] <= window:
            j -= 1
        if j < i and t > points[j][0]:
            ts.append(t)
            rs.append((n - points[j][1]) / (t - points[j][0]))
    return ts, rs


def main() -> None:
    with open(sys.argv[1]) as f:
        data = json.load(f)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, s in data["series"].items():
        tl = s.get("timeline")
        if tl:
            ax1.plot([r["t"] for r in tl], [r["concurrency"] for r in tl], label=f"{name} concurrency")
            if any("inFlight" in r for r in tl):
                ax1.plot(
                    [r["t"] for r in tl], [r.get("inFlight", 0) for r in tl], ":", label=f"{name} in flight"
                )
            ax2.plot(*rates([(r["t"], r["done"]) for r in tl]), label=f"{name} (ferry timeline)")
        elif s.get("proxy"):
            ax2.plot(*rates([(t, c) for t, c in s["proxy"]]), "--", label=f"{name} (PUTs seen by proxy)")
    ax1.set_ylabel("concurrency")
    ax1.legend(fontsize=7)
    ax2.set_ylabel("objects/s (5 s moving)")
    ax2.set_xlabel("seconds")
    ax2.legend(fontsize=7)
    fig.suptitle(f"ferry, scenario {data['scenario']}")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=90)


if __name__ == "__main__":
    main()
