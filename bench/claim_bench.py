"""Store benchmark: one binder batch's bind completion (`arq_state.finish_binds`), on SQLite and on
a throwaway PostgreSQL.

    python bench/claim_bench.py [--batch 64] [--rounds 20]

A batch of ARQs bound round-robin over many deployables (as the binders see Nova's PATCHes) and
one that all lands on one deployable; the median milliseconds per batch and their ratio (what
spreading costs, which set-based claiming keeps near 1). Each round's handles are
given back (unbind) so that every round finds the same free handles. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from factories import add_device, add_profile  # noqa: E402
from pgserver import PostgresServer  # noqa: E402


def batch_ms(url: str, batch: int, rounds: int, deployables: int, handles: int) -> float:
    from rayborg.store import arq_state, bind_plan
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade

    store = Store(url)
    upgrade(store.engine)
    tree = add_device(store, deployables=deployables, handles_per_deployable=handles)
    add_profile(store, "bench", [{"resources:FPGA": str(batch)}])
    times = []
    for _ in range(rounds):
        arqs = [a.uuid for a in store.transact(arq_state.create_arqs, "bench", "p")]
        store.transact(arq_state.start_bind, {
            u: arq_state.BindTarget("host1", tree.rp_uuids[i % deployables], str(uuid.uuid4()), "p")
            for i, u in enumerate(arqs)})
        started = time.perf_counter()
        outcome = store.transact(arq_state.finish_binds, arqs)
        times.append(time.perf_counter() - started)
        if set(outcome.values()) != {"Bound"}:
            raise SystemExit(f"a bind did not complete: {sorted(set(outcome.values()))}")
        store.transact(bind_plan.unbind_releasing, arqs, None)
        store.transact(arq_state.delete_arqs, arqs)
    store.dispose()
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="ARQs per batch (a binder takes up to 64)")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    pg = PostgresServer().start()
    try:
        with tempfile.TemporaryDirectory() as work:
            databases = {"SQLite": lambda: f"sqlite:///{work}/{uuid.uuid4()}.db", "PostgreSQL": pg.create_database}
            print(f"finish_binds of {args.batch} ARQs, median of {args.rounds} batches (ms)")
            print(f"{'database':<12}{'spread over ' + str(args.batch) + ' deployables':>32}{'on one deployable':>20}"
                  f"{'ratio':>8}")
            for name, new_url in databases.items():
                spread = batch_ms(new_url(), args.batch, args.rounds, deployables=args.batch, handles=8)
                one = batch_ms(new_url(), args.batch, args.rounds, deployables=1, handles=args.batch)
                print(f"{name:<12}{spread:>32.1f}{one:>20.1f}{spread / one:>8.2f}")
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
