"""A benchmark's server (server.py or floor.py) under tracemalloc: SIGUSR1 writes a snapshot
to $TIDINGS_TRACEMALLOC_OUT.N (N = 1, 2, ...), whole or not at all.

bench/memory.py --tracemalloc starts its servers through this file, takes a snapshot before
the connections open and one with them all open, and lists what grew, per connection.

  python bench/tracemem.py SCRIPT [its flags]
"""

from __future__ import annotations

import itertools
import os
import runpy
import signal
import sys
import tracemalloc
from types import FrameType

FRAMES = int(os.environ.get("TIDINGS_TRACEMALLOC_FRAMES", "12"))


def main() -> None:
    out = os.environ["TIDINGS_TRACEMALLOC_OUT"]
    taken = itertools.count(1)

    def snapshot(_signum: int, _frame: FrameType | None) -> None:
        n = next(taken)
        tracemalloc.take_snapshot().dump(f"{out}.{n}.part")
        os.replace(f"{out}.{n}.part", f"{out}.{n}")

    script, *rest = sys.argv[1:]
    sys.argv = [script, *rest]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR1, snapshot)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
