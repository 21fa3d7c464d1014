"""CPU per request of the front door and idle CPU of a whole `rayborg serve`, measured in CPU time
(utime + stime from /proc) rather than wall time, so that a loaded machine does not blur them.

    python bench/profile_front_door.py cpu [--target rayborg|rayborg-no-actors|floor] [--path show_arq]
                                           [--requests 20000] [--clients 50] [--py-spy FILE.txt]
    python bench/profile_front_door.py idle [--seconds 60]

`cpu`: seeds the benchmark rows (bench/dataset.py), starts the target, warms it up, then sends a
fixed number of GETs with bench/loadgen.py (its own process) and prints the server's CPU
microseconds per request (the front door's process, and for rayborg the rest of its process tree
over the same window). `--py-spy` records the front door meanwhile (raw collapsed stacks).
`idle`: starts `rayborg serve` with its actors, lets it settle, and prints each process's CPU
seconds over the window (front door, GCS, raylet, dashboard, actors...).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset  # noqa: E402
import procs  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PATHS = {"show_arq": lambda: f"/v2/accelerator_requests/{dataset.show_arq_uuid()}",
         "profiles": lambda: "/v2/device_profiles", "arqs": lambda: "/v2/accelerator_requests",
         "devices": lambda: "/v2/devices"}


def cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            parts = f.read().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(p.decode(errors="replace") for p in parts if p)
    return text[:110]


def tree_cpu(root: int) -> dict[int, float]:
    return {pid: cpu_s(pid) for pid in procs.process_tree(root)}


def start(target: str, work: Path, db: Path) -> procs.Deployment:
    if target == "floor":
        return procs.start_floor(work, db, 1)
    if target == "rayborg-no-actors":
        port = procs.free_port()
        proc = procs.spawn([sys.executable, "-m", "rayborg", "serve", "--host", "127.0.0.1", "--port", str(port),
                            "--database-url", f"sqlite:///{db}", "--no-actors"], work / "rayborg.log")
        dep = procs.Deployment("rayborg", f"http://127.0.0.1:{port}", proc, work / "rayborg.log")
        procs.wait_200(dep.base_url + "/v2", 60, proc)
        time.sleep(1.0)
        return dep
    dep, _ = procs.start_rayborg(work, f"sqlite:///{db}", 1, 1)
    return dep


def front_pid(dep: procs.Deployment) -> int:
    return dep.proc.pid  # `rayborg serve --workers 1` serves in its own process; the floor too


def load(url: str, requests: int, clients: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "loadgen.py"), url, "--clients", str(clients),
           "--duration", "600", "--max-requests", str(requests)]
    for k, v in dataset.HEADERS.items():
        cmd += ["--header", f"{k}:{v}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cmd_cpu(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="rayborg-prof-") as tmp:
        work = Path(tmp)
        db = work / "seed.db"
        procs.seed_rayborg(f"sqlite:///{db}")
        dep = start(args.target, work, db)
        try:
            url = dep.base_url + PATHS[args.path]()
            load(url, min(2000, args.requests), args.clients)  # warm-up
            pid = front_pid(dep)
            root = dep.proc.pid
            spy = None
            if args.py_spy:
                spy = subprocess.Popen(["py-spy", "record", "-r", "500", "-p", str(pid), "-o", args.py_spy,
                                        "-f", "raw", "--nonblocking"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            before, t0 = tree_cpu(root), time.perf_counter()
            res = load(url, args.requests, args.clients)
            after, t1 = tree_cpu(root), time.perf_counter()
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            n = res["ok"]
            front = after.get(pid, 0) - before.get(pid, 0)
            rest = sum(after.get(p, 0) - before.get(p, 0) for p in after if p != pid)
            print(json.dumps({"target": args.target, "path": args.path, "ok": n, "errors": res["errors"],
                              "wall_s": round(t1 - t0, 2), "req_s_wall": res["req_s"],
                              "front_cpu_us_per_req": round(front / n * 1e6, 1),
                              "rest_of_tree_cpu_us_per_req": round(rest / n * 1e6, 1),
                              "rest_of_tree_cpu_s": round(rest, 2)}))
        finally:
            dep.stop()


def cmd_inproc(args: argparse.Namespace) -> None:
    """The front door's own code (routing, middleware, auth, policy, handler, store read, body) for
    one request, called in-process on mocked requests: no HTTP parsing or writing, no client, so
    that before/after comparisons of rayborg's code are not blurred by the load generator."""
    import asyncio
    import cProfile
    import pstats

    from aiohttp.test_utils import make_mocked_request

    from rayborg.api.app import create_app
    from rayborg.settings import Settings
    from rayborg.store.engine import Store

    with tempfile.TemporaryDirectory(prefix="rayborg-inproc-") as tmp:
        db = Path(tmp) / "seed.db"
        procs.seed_rayborg(f"sqlite:///{db}")
        url = f"sqlite:///{db}"
        store = Store(url)
        app = create_app(Settings(database_url=url, _env_file=None), store)
        path = PATHS[args.path]()
        headers = {**dataset.HEADERS, "Host": "127.0.0.1:6666"}

        async def main() -> None:
            app.freeze()
            await app.startup()

            base = make_mocked_request("GET", path, headers=headers, app=app)  # mocks: made once, cloned

            async def once() -> None:
                req = base.clone()
                resp = await app._handle(req)
                assert resp.status == 200, (resp.status, resp.body)

            for _ in range(500):
                await once()
            best = None
            for _ in range(args.rounds):
                t0 = time.process_time()
                for _ in range(args.requests):
                    await once()
                per = (time.process_time() - t0) / args.requests * 1e6
                best = per if best is None else min(best, per)
            print(json.dumps({"path": args.path, "inproc_cpu_us_per_req_best_of": args.rounds,
                              "us": round(best, 1)}))
            if args.cprofile:
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(args.requests):
                    await once()
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            await app.cleanup()

        asyncio.run(main())
        store.dispose()


def cmd_idle(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="rayborg-idle-") as tmp:
        work = Path(tmp)
        db = work / "seed.db"
        procs.seed_rayborg(f"sqlite:///{db}")
        dep = start("rayborg", work, db)
        try:
            time.sleep(args.settle)
            root = dep.proc.pid
            before = tree_cpu(root)
            time.sleep(args.seconds)
            after = tree_cpu(root)
            rows = sorted(((after[p] - before.get(p, 0.0), p) for p in after), reverse=True)
            total = sum(d for d, _ in rows)
            print(f"idle CPU over {args.seconds:g} s: {total:.2f} s in {len(rows)} processes "
                  f"({total / args.seconds * 100:.2f} % of one core)")
            for d, p in rows:
                print(f"  {d:7.3f} s  {p:>7}  {cmdline(p)}")
        finally:
            dep.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cpu")
    c.add_argument("--target", default="rayborg", choices=["rayborg", "rayborg-no-actors", "floor"])
    c.add_argument("--path", default="show_arq", choices=sorted(PATHS))
    c.add_argument("--requests", type=int, default=20000)
    c.add_argument("--clients", type=int, default=50)
    c.add_argument("--py-spy", help="record the front door with py-spy into this file (raw collapsed stacks)")
    p = sub.add_parser("inproc")
    p.add_argument("--path", default="show_arq", choices=sorted(PATHS))
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cprofile", action="store_true")
    i = sub.add_parser("idle")
    i.add_argument("--seconds", type=float, default=60.0)
    i.add_argument("--settle", type=float, default=10.0)
    args = ap.parse_args()
    {"cpu": cmd_cpu, "inproc": cmd_inproc, "idle": cmd_idle}[args.cmd](args)


if __name__ == "__main__":
    main()
