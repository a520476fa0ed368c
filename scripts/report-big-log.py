#!/usr/bin/env python3
"""Fills an EdgeQ experience log with N generated rows, for timing `edgeq report` on a big log
(docs/operations.md, "The run report").

    edgeq log-stress --data DIR --rows 1        # an empty EdgeQ log with its schema and meta
    python3 scripts/report-big-log.py DIR 1000000
    time edgeq report --data DIR

Rows span 30 days at a fixed rate: the first 60 % in shadow mode (the incumbent, the served model's
choice beside it), then control mode (the model, 5 % explorations, 0.5 % fallbacks, every tenth
block of 1,000 rows the incumbent's control block); an 8-wide state, two Q-values, like a small
gateway's rows. Rewards are seeded noise, EdgeQ's 0.2 higher on average.
"""
import random
import sqlite3
import struct
import sys
import time


def main():
    data, n = sys.argv[1], int(sys.argv[2])
    con = sqlite3.connect(f"{data}/experience.sqlite")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    rng = random.Random(1)
    t0 = time.time() - 30 * 86400
    dt = 30 * 86400 / n
    state = struct.pack("<8f", *[0.1 * i for i in range(8)])
    sql = ("INSERT INTO transitions (time, tick, episode, state, state_width, action, actor, reward, next_state, "
           "terminal, truncated, mode, model_version, q_values, model_action, flags) VALUES (?,?,?,?,?,?,?,?,?,0,0,?,?,?,?,0)")
    batch = []
    for k in range(n):
        control = k >= 0.6 * n
        u = rng.random()
        if not control or (k // 1000) % 10 == 0:
            actor, reward = "incumbent", rng.gauss(-1.0, 0.5)
        elif u < 0.005:
            actor, reward = "fallback", rng.gauss(-1.2, 0.5)
        elif u < 0.055:
            actor, reward = "exploration", rng.gauss(-1.0, 0.5)
        else:
            actor, reward = "model", rng.gauss(-0.8, 0.5)
        action = rng.randrange(2)
        q = None if actor == "fallback" else struct.pack("<2f", rng.random(), rng.random())
        model_action = None if q is None else (action if rng.random() < 0.8 else 1 - action)
        batch.append((t0 + k * dt, k, k // 500, state, 8, action, actor, reward, state,
                      "control" if control else "shadow", "3", q, model_action))
        if len(batch) == 10000:
            con.executemany(sql, batch)
            con.commit()
            batch.clear()
    if batch:
        con.executemany(sql, batch)
        con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(con.execute("SELECT count(*) FROM transitions").fetchone()[0], "rows")


if __name__ == "__main__":
    main()
