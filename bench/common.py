"""What every benchmark shares: servers pinned to a core, tokens, CPU and RSS probes, the table.

A benchmark is a list of cases (e.g. `websocket`, `sse`) and one `measure(server, case, args)`
coroutine; `run()` starts a fresh server per case and side (floor first, then tidings), pins
the server to core 0 and this process (the load generator) to core 1, collects the numbers,
checks the server's log for errors and prints a summary table (and JSON with `--json`).
A benchmark that names `node_cases` also takes `--node`: a third side, node with `ws`
(bench/node/floor.js), in those cases.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import uvloop

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists() else sys.executable
SECRET = secrets.token_urlsafe(32)
TENANT = "bench"
SERVER_CORE, CLIENT_CORE = 0, 1
SIDES = ("floor", "tidings")
NODE_DIR = ROOT / "bench/node"
_T0 = time.monotonic()


def log(message: str) -> None:
    """A progress line on stderr, so that stdout stays for the table or the JSON."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def token(sub: str, role: str = "user", tenant: str = TENANT, ttl: int = 3600) -> str:
    claims = {"sub": sub, "tenant_id": tenant, "role": role, "exp": int(time.time()) + ttl}
    return jwt.encode(claims, SECRET, algorithm="HS256")


# Open files a benchmark process may need: 50,000 connections and their other ends.
NOFILE = int(os.environ.get("TIDINGS_BENCH_NOFILE", "120000"))


def raise_nofile(want: int = NOFILE) -> int:
    """Raises this process's open-file limit to `want` (root may raise the hard limit too),
    else as far as the hard limit allows; returns the limit now in force. For this process
    and the servers it starts only (a `preexec_fn`), never system-wide."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
        return want
    except (ValueError, OSError):
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


# Read once, before this process pins itself to the client core.
_CAN_PIN = {SERVER_CORE, CLIENT_CORE} <= os.sched_getaffinity(0)


def can_pin() -> bool:
    return _CAN_PIN


def pinned(core: int) -> Callable[[], None]:
    """A `preexec_fn` that puts the child on one core with the open-file limit raised."""
    def setup() -> None:
        if _CAN_PIN:
            os.sched_setaffinity(0, {core})
        raise_nofile()

    return setup


def cores_busy(seconds: float = 0.5) -> float:
    """Share of the two benchmark cores busy right now (before our servers start: others)."""
    def sample() -> tuple[int, int]:
        busy = total = 0
        for line in Path("/proc/stat").read_text().splitlines():
            name, *ticks = line.split()
            if name in (f"cpu{SERVER_CORE}", f"cpu{CLIENT_CORE}"):
                t = [int(x) for x in ticks[:8]]
                total += sum(t)
                busy += sum(t) - t[3] - t[4]  # minus idle and iowait
        return busy, total

    b0, t0 = sample()
    time.sleep(seconds)
    b1, t1 = sample()
    return (b1 - b0) / max(t1 - t0, 1)


def wait_for_quiet(max_wait: float) -> float:
    """Wait (at most `max_wait` s) until other work leaves the cores; return the busy share."""
    deadline = time.monotonic() + max_wait
    busy = cores_busy()
    while busy > 0.15 and time.monotonic() < deadline:
        log(f"  other processes keep the cores {100 * busy:.0f}% busy; waiting for a quiet moment")
        time.sleep(2)
        busy = cores_busy()
    return busy


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_ready() -> dict[str, str]:
    """Check node and npm; install bench/node's packages (`npm ci`) unless they are in place.

    Returns the versions of node and ws, for the JSON.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise SystemExit("--node needs node (18 or later) and npm on the PATH, "
                         "e.g. apt-get install nodejs npm")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 18:
        raise SystemExit(f"--node needs node 18 or later; {node} is {version}")
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    wanted = lock["packages"]["node_modules/ws"]["version"]
    installed = NODE_DIR / "node_modules/ws/package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != wanted:
        log(f"node floor: installing ws {wanted} (npm ci in {NODE_DIR}, once)")
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"npm ci in {NODE_DIR} failed ({done.returncode}):\n"
                             f"{(done.stderr or done.stdout)[-3000:]}")
        log("node floor: installed")
    return {"node": version, "ws": wanted}


class Server:
    """A tidings, floor or node floor server process on core 0, its log in `workdir`."""

    def __init__(self, program: str, workdir: Path, extra: list[str] | None = None,
                 db: str | None = None, label: str | None = None,
                 root: Path = ROOT) -> None:
        self.program = program           # floor, tidings or node
        self.side = label or program     # its column in the table
        self.root = root                 # the tree whose server.py runs (--baseline: another)
        self.workdir = workdir
        self.extra = extra or []  # more tidings flags (a comparison of two tidings setups)
        self.port = free_port()
        self.database = db or str(workdir / f"bench-{self.port}.db")
        self.log_path = workdir / f"{self.side}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    @property
    def command(self) -> list[str]:
        common = ["--host", "127.0.0.1", "--port", str(self.port),
                  f"--jwt-secret={SECRET}"]  # one form for a secret that starts with "-"
        if self.program == "floor":
            return [PYTHON, str(ROOT / "bench/floor.py"), *common]
        if self.program == "node":
            return ["node", str(NODE_DIR / "floor.js"), *common]
        return [PYTHON, str(self.root / "server.py"), *common, "--db", self.database,
                "--heartbeat", "30", "--max-connections-per-user", "0", *self.extra]

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.command, cwd=self.root, stdout=out,
                                         stderr=subprocess.STDOUT, preexec_fn=pinned(SERVER_CORE))
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.side} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.side} not ready after {timeout}s; see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.exit_code = self.proc.returncode if self.proc else None
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.exit_code = None  # did not stop on SIGTERM

    def problems(self) -> list[str]:
        """Error lines in the log, and an exit that was not a clean 0 on SIGTERM."""
        found = []
        if self.exit_code != 0:
            found.append(f"exit code after SIGTERM: {self.exit_code} (None = had to be killed)")
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        for line in text.splitlines():
            if any(k in line for k in ("Traceback", "ERROR", "Error:", "Exception", "CRITICAL")):
                found.append(line[:300])
        return found


def run_delay(pid: int | str) -> float:
    """Seconds the main thread spent runnable but waiting for its core (other load on it)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


class Profiler:
    """py-spy sampling a server (without pausing it) until `stop()`; summarised as text lines."""

    def __init__(self, server: Server, out: Path, svg: Path | None = None) -> None:
        spy = shutil.which("py-spy", path=f"{Path(PYTHON).parent}:{os.environ.get('PATH', '')}")
        if spy is None:
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.out = out
        # The raw stacks for the summary; with `svg`, a second sampler draws the flame graph.
        self.procs = [subprocess.Popen(
            [spy, "record", "--nonblocking", "--rate", "250", "--format", form,
             "--output", str(path), "--pid", str(server.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pinned(CLIENT_CORE))
            for form, path in [("raw", out), ("flamegraph", svg)] if path is not None]

    def stop(self, top: int = 15) -> dict[str, list[str]]:
        """Where the busy samples go: by own time, and (project code only) with callees.

        Samples whose innermost frame is a wait (the event loop's select, the aiosqlite
        thread's queue) count as idle and are left out of the shares.
        """
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            proc.wait(30)
        own: dict[str, int] = {}
        total: dict[str, int] = {}
        busy = idle = 0
        for line in self.out.read_text().splitlines() if self.out.exists() else []:
            stack, _, count = line.rpartition(" ")
            n = int(count)
            frames = stack.split(";")
            if any(w in frames[-1] for w in _IDLE_FRAMES):
                idle += n
                continue
            busy += n
            names = [_short(f) for f in frames]
            own[names[-1]] = own.get(names[-1], 0) + n
            for f in set(names):
                if _is_project(f):
                    total[f] = total.get(f, 0) + n

        def ranked(d: dict[str, int]) -> list[str]:
            best = sorted(d.items(), key=lambda kv: -kv[1])[:top]
            return [f"{100 * n / max(busy, 1):5.1f}% {f}" for f, n in best]

        share = f"{100 * busy / max(busy + idle, 1):.0f}% of samples busy"
        return {"self": ranked(own), "total": ranked(total), "file": [str(self.out)],
                "busy": [share]}


_IDLE_FRAMES = ("EpollSelector.select (", "aiosqlite/core.py:59)", "Condition.wait (",
                "Thread._wait_for_tstate_lock (")
_PROJECT_FILES = {p.name for d in ("tidings", "handlers") for p in (ROOT / d).glob("**/*.py")}


def _short(frame: str) -> str:
    """`func (path/file.py:123)` -> `func (path/file.py)`: add up the lines of a function."""
    return frame.rsplit(":", 1)[0] + ")" if frame.endswith(")") and ":" in frame else frame


def _is_project(frame: str) -> bool:
    where = frame.rpartition("(")[2].rstrip(")")
    return "site-packages" not in where and (where.startswith("handlers/") or where.startswith(
        "tidings/") or where.rpartition("/")[2] in _PROJECT_FILES and "/" not in where)


class CpuMeter:
    """CPU used by the server and by this process (the generator) over a stretch of wall time.

    `*_wait_pct` is time spent ready to run but kept off the core by other processes: when it
    is more than a few percent, the machine is busy with other work and the run is noisy.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.wall = time.monotonic()
        self.srv = server.cpu_seconds()
        self.own = time.process_time()
        self.srv_wait = run_delay(server.pid)
        self.own_wait = run_delay("self")

    def read(self) -> dict[str, float]:
        wall = time.monotonic() - self.wall

        def pct(x: float) -> float:
            return round(100 * x / wall, 1)

        return {
            "server_cpu_pct": pct(self.server.cpu_seconds() - self.srv),
            "client_cpu_pct": pct(time.process_time() - self.own),
            "server_wait_pct": pct(run_delay(self.server.pid) - self.srv_wait),
            "client_wait_pct": pct(run_delay("self") - self.own_wait),
        }


@dataclasses.dataclass
class Metric:
    """One row of the summary: `key` of a case's numbers, and its target."""

    case: str
    key: str
    label: str
    unit: str
    min_ratio: float | None = None  # target: tidings/floor at least this
    max_value: float | None = None  # target: tidings at most this

    def row(self, results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
        t = results.get(self.case, {}).get("tidings", {}).get(self.key)
        f = results.get(self.case, {}).get("floor", {}).get(self.key)
        ratio = t / f if t is not None and f else None
        ok: bool | None = None
        target = ""
        if self.min_ratio is not None:
            target = f">= {self.min_ratio} x floor"
            ok = None if ratio is None else ratio >= self.min_ratio
        elif self.max_value is not None:
            target = f"<= {self.max_value:g} {self.unit}"
            ok = None if t is None else t <= self.max_value
        row = {"case": self.case, "metric": self.label, "unit": self.unit, "tidings": t,
               "floor": f, "ratio": ratio, "target": target, "ok": ok}
        if "node" in results.get(self.case, {}):  # the node floor ran in this case
            n = results[self.case]["node"].get(self.key)
            row.update(node=n, node_ratio=t / n if t is not None and n else None)
        return row


def parser(description: str, cases: list[str], node_cases: list[str] | None = None,
           ) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a shorter run (fewer seconds, messages)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-' = stdout)")
    p.add_argument("--only", choices=SIDES + ("node",) * bool(node_cases),
                   help="run one side only (e.g. the floor alone)")
    if node_cases:
        p.add_argument("--node", action="store_true",
                       help="also run the node floor (node with ws, bench/node) in the cases "
                            + ", ".join(node_cases) + "; npm installs ws there on first use")
    p.add_argument("--case", choices=cases, action="append",
                   help="run this case only (repeatable); default: all of " + ", ".join(cases))
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' logs and databases")
    p.add_argument("--flamegraph", metavar="PREFIX",
                   help="with --profile's sampling, also draw a py-spy flame graph of the "
                        "tidings server: PREFIX-<bench>-<case>.svg")
    p.add_argument("--profile", action="store_true",
                   help="sample the tidings server with py-spy; print its top functions")
    p.add_argument("--max-wait", type=float, default=60, metavar="SECONDS",
                   help="before each run, wait this long at most for other load to pass (60)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the sides alternately, keep each side's best (1)")
    p.add_argument("--baseline", metavar="REV",
                   help="also run tidings as of this commit (a third side, `baseline`, in the "
                        "same rounds), to compare a change with what came before it")
    return p


def baseline_tree(rev: str, workdir: Path) -> Path:
    """The server's files as of `rev`, exported (git archive) under `workdir`; run with this
    tree's virtualenv."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", f"{rev}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    tree = workdir / f"baseline-{commit}"
    tree.mkdir()
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {commit} failed")
    log(f"baseline: {rev} ({commit}) exported to {tree}")
    return tree


Measure = Callable[[Server, str, argparse.Namespace], Awaitable[dict[str, Any]]]


def better(new: dict[str, Any], old: dict[str, Any] | None, best: tuple[str, bool]) -> bool:
    """Is `new` the better round? best = (key, higher_is_better)."""
    key, higher = best
    if old is None or old.get(key) is None:
        return True
    if new.get(key) is None:
        return False
    return bool(new[key] > old[key]) if higher else bool(new[key] < old[key])


MakeServer = Callable[[str, str, Path], Server]  # (side, case, workdir) -> a server to start


async def run_cases(name: str, cases: list[str], measure: Measure, args: argparse.Namespace,
                    best: tuple[str, bool], make_server: MakeServer | None = None,
                    node_cases: list[str] | None = None) -> dict[str, Any]:
    """Run every case against a fresh floor and tidings server (and node floor with --node,
    in `node_cases`); return all numbers."""
    node_cases = node_cases or []
    if can_pin():
        os.sched_setaffinity(0, {CLIENT_CORE})
    else:
        log("warning: fewer than 2 cores available, server and generator are not pinned")
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix=f"tidings-bench-{name}-"))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    every: dict[str, dict[str, list[dict[str, Any]]]] = {}  # each round's numbers
    problems: dict[str, list[str]] = {}
    profiles: dict[str, dict[str, list[str]]] = {}
    sides = [args.only] if args.only else [*SIDES, *["node"] * getattr(args, "node", False)]
    base_root: Path | None = None
    if getattr(args, "baseline", None):
        if make_server is not None:
            raise SystemExit(f"--baseline is not supported by {name}")
        base_root = baseline_tree(args.baseline, workdir)
        sides.append("baseline")
    if "tidings" in sides and not (ROOT / "server.py").exists():
        log("server.py not found: tidings side skipped")
        sides.remove("tidings")
    node: dict[str, str] = {}
    if "node" in sides:
        for case in args.case or cases:
            if case not in node_cases:
                log(f"{name}/{case}: no node side (the node floor runs in "
                    f"{', '.join(node_cases)} only)")
        node = node_ready()
    load = os.getloadavg()[0]
    if load > 1.0:
        log(f"warning: load average {load:.1f} before the run: other work shares these cores")
    plan = [(r, case, side) for r in range(args.rounds) for case in args.case or cases
            for side in sides if side != "node" or case in node_cases]
    for round_, case, side in plan:
        if make_server:
            server = make_server(side, case, workdir)
        elif side == "baseline" and base_root is not None:
            server = Server("tidings", workdir, label="baseline", root=base_root)
        else:
            server = Server(side, workdir)
        log(f"{name}/{case}: starting {side} on 127.0.0.1:{server.port}"
            + (f" (round {round_ + 1}/{args.rounds})" if args.rounds > 1 else ""))
        busy = wait_for_quiet(args.max_wait)
        profiler: Profiler | None = None
        try:
            server.start()
            if (args.profile or args.flamegraph) and server.program == "tidings":
                svg = Path(f"{args.flamegraph}-{name}-{case}-{side}.svg") \
                    if args.flamegraph else None
                profiler = Profiler(server,
                                    workdir / f"profile-{name}-{case}-{side}-{round_}.txt", svg)
            numbers = await measure(server, case, args)
        except Exception as exc:  # one failed side must not hide the others' numbers
            log(f"{name}/{case}/{side} failed: {exc!r}")
            numbers = {"error": repr(exc)}
        finally:
            if profiler is not None:
                where = case if side == "tidings" else f"{case}, {side}"
                profiles[where] = profiler.stop()
                for line in profiles[where]["self"][:8]:
                    log(f"  profile: {line}")
            server.stop()
        numbers["others_busy_pct_before"] = round(100 * busy, 1)
        every.setdefault(case, {}).setdefault(side, []).append(numbers)
        if better(numbers, results.get(case, {}).get(side), best):
            results.setdefault(case, {})[side] = numbers
        found = server.problems()
        if found:
            problems.setdefault(f"{case}/{side}", []).extend(found[:20])
            log(f"{name}/{case}/{side}: {len(found)} problem line(s) in {server.log_path}")
    if args.keep_logs or problems or profiles:
        log(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"bench": name, "quick": bool(args.quick), "rounds": args.rounds,
            "load_before": round(load, 2), "results": results, "problems": problems,
            "profiles": profiles, "medians": medians(every),
            **({"node_versions": node} if node else {})}


def medians(every: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Each number's median over the rounds, per case and side (next to the best round)."""
    out: dict[str, Any] = {}
    for case, sides in every.items():
        for side, rounds in sides.items():
            keys = {k for r in rounds for k, v in r.items() if isinstance(v, int | float)}
            out.setdefault(case, {})[side] = {
                k: statistics.median(r[k] for r in rounds if isinstance(r.get(k), int | float))
                for k in sorted(keys)}
    return out


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def print_table(rows: list[dict[str, Any]], lead: tuple[str, ...] = ("case",)) -> None:
    """Summary rows as a table; `node` and `node ratio` (tidings / node) columns only when a
    row has the node floor's figure."""
    node = any("node" in r for r in rows)

    def ratio(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    head = [*lead, "metric", "tidings", "floor", *["node"] * node, "ratio",
            *["node ratio"] * node, "target", "ok"]
    table = [head] + [
        [*(r[k] for k in lead), f"{r['metric']} ({r['unit']})", fmt(r["tidings"]),
         fmt(r["floor"]), *[fmt(r.get("node"))] * node, ratio(r["ratio"]),
         *[ratio(r.get("node_ratio"))] * node, r["target"] or "-",
         {True: "yes", False: "NO", None: "-"}[r["ok"]]]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def report(run: dict[str, Any], metrics: list[Metric]) -> None:
    """Print the summary table to stdout and write the JSON if asked."""
    rows = [m.row(run["results"]) for m in metrics if m.case in run["results"]]
    run["summary"] = rows
    print(f"\n== {run['bench']}{' (quick)' if run['quick'] else ''} ==")
    print_table(rows)
    for case, sides in run["results"].items():
        for side, numbers in sides.items():
            print(f"  {case}/{side}: " + ", ".join(f"{k}={fmt(v)}" for k, v in numbers.items()))
    if run.get("rounds", 1) > 1:
        for case, sides in run.get("medians", {}).items():
            for side, numbers in sides.items():
                print(f"  {case}/{side}, medians of {run['rounds']} rounds: "
                      + ", ".join(f"{k}={fmt(v)}" for k, v in numbers.items()))
    for case, sides in run.get("medians", {}).items():
        now, base = sides.get("tidings", {}), sides.get("baseline", {})
        for m in metrics:
            if m.case == case and now.get(m.key) is not None and base.get(m.key):
                print(f"  {case}: {m.label} ({m.unit}), median: tidings {fmt(now[m.key])} / "
                      f"baseline {fmt(base[m.key])} = {now[m.key] / base[m.key]:.3f}")
    for case, profile in run.get("profiles", {}).items():
        print(f"  tidings profile, {case} (py-spy, share of busy samples, "
              f"{profile['busy'][0]}; raw stacks in {profile['file'][0]}):")
        print("    own time:")
        for line in profile["self"]:
            print(f"      {line}")
        print("    project functions, including callees:")
        for line in profile["total"]:
            print(f"      {line}")
    for where, lines in run["problems"].items():
        print(f"  server problems in {where}:")
        for line in lines:
            print(f"    {line}")
    sys.stdout.flush()


def write_json(runs: list[dict[str, Any]] | dict[str, Any], path: str | None) -> None:
    if not path:
        return
    text = json.dumps(runs, indent=2)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n")
        log(f"JSON written to {path}")


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main(name: str, description: str, cases: list[str], measure: Measure,
         metrics: list[Metric], best: tuple[str, bool],
         options: Callable[[argparse.ArgumentParser], None] | None = None,
         argv: list[str] | None = None, make_server: MakeServer | None = None,
         node_cases: list[str] | None = None) -> dict[str, Any]:
    """A benchmark script's whole `main`: flags, the runs, the table, the JSON.

    `node_cases`: the cases the node floor can serve (it then takes --node and --only node).
    """
    p = parser(description, cases, node_cases)
    if options is not None:
        options(p)
    args = p.parse_args(argv)
    # The load generator on uvloop too: it must stay faster than the server it measures.
    run = uvloop.run(run_cases(name, cases, measure, args, best, make_server, node_cases))
    report(run, metrics)
    write_json(run, args.json)
    return run
