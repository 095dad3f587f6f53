"""Run every benchmark (create, fanout, memory, handshake) and print one summary table.

Flags are passed to each script: --quick (the whole set in about two minutes), --rounds,
--only, --profile, --keep-logs; --node to the scripts that have a node floor (fanout).
--json PATH writes every run's numbers into one file.

  .venv/bin/python bench/all.py [--quick] [--json bench.json]
"""

from __future__ import annotations

import argparse

import create
import fanout
import handshake
import memory
from common import print_table, write_json

BENCHES = {"create": create, "fanout": fanout, "memory": memory, "handshake": handshake}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter runs")
    p.add_argument("--rounds", type=int, default=1, help="best of N alternating rounds (1)")
    p.add_argument("--only", choices=["floor", "tidings"], help="one side only")
    p.add_argument("--node", action="store_true",
                   help="also run the node floor (node with ws) where a benchmark has it")
    p.add_argument("--profile", action="store_true", help="py-spy the tidings server")
    p.add_argument("--keep-logs", action="store_true", help="keep server logs")
    p.add_argument("--max-wait", default="60", help="seconds to wait for other load (60)")
    p.add_argument("--bench", choices=list(BENCHES), action="append",
                   help="run this benchmark only (repeatable)")
    p.add_argument("--json", metavar="PATH", help="write all numbers as JSON ('-' = stdout)")
    args = p.parse_args()
    shared = ["--rounds", str(args.rounds), "--max-wait", args.max_wait]
    shared += ["--quick"] * args.quick + ["--profile"] * args.profile
    shared += ["--keep-logs"] * args.keep_logs + (["--only", args.only] if args.only else [])
    runs = []
    for name in args.bench or list(BENCHES):
        # Each script prints its own table as it finishes; the JSON goes out once at the end.
        module = BENCHES[name]
        node = ["--node"] if args.node and getattr(module, "NODE_CASES", None) else []
        runs.append(module.run(shared + node))
    print("\n== summary ==")
    print_table([{"bench": run["bench"], **r} for run in runs for r in run["summary"]],
                lead=("bench", "case"))
    write_json(runs, args.json)


if __name__ == "__main__":
    main()
