"""Synthetic Azure-2019-like traces: seeded function mixes for judging keep-alive policies off the sample.

A policy tuned on the 100 sampled functions may have learnt those functions rather than the
problem. `generate(seed, functions)` draws another day of invocations, independently of the sample
and of any policy, from published characteristics of the Azure Functions workload (Shahrad et al.,
"Serverless in the Wild", USENIX ATC 2020, §3):

- memory: the paper's Burr XII fit of apps' average allocated memory (c 11.652, k 0.221,
  scale 107.083 MB; median ~140 MB, 90 % under ~260 MB);
- average execution time: its log-normal fit (ln seconds: mean -0.38, sigma 2.36; median 0.68 s),
  capped at 600 s;
- arrival processes, one per function, drawn from five kinds (weights in `KINDS`):
  - `timer`: cron-like, a period from 1 minute to a day, random phase, 2 % of firings missed;
    a third also get sporadic extra calls (Poisson), a fifth a second timer of another period;
  - `poisson`: a constant rate, log-uniform from once a day to 30 a minute;
  - `diurnal`: Poisson whose rate follows the time of day (a sine, silent at night for some);
  - `bursty`: on/off sessions, off times Pareto (alpha 1.2, heavy-tailed), on times log-normal
    (median 2 min), a high rate while on;
  - `rare`: 1 to 12 calls a day at random times, each followed by 0-2 retries within minutes.
  The mix gives about 40 % of functions called at most once an hour on average and about 80 % at
  most once a minute (the paper: 45 % and 81 %).

Everything comes from `random.Random(seed)`: one seed, one trace. `write_azure2019` writes a trace
in the public dataset's three csv files, so `mist simulate --trace` and `load_azure2019` read it
back; `mist simulate --synthetic SEED` skips the files.

    python -m mist.sim.synthetic /tmp/syn1_ --seed 1 --functions 400
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from mist.errors import InvalidRequest
from mist.sim.trace import Trace, TraceFunction

DAY_S = 86400.0
MINUTES = 1440
MAX_PER_MINUTE = 1800  # 30 a second: busier functions are always warm, and only slow the replay
PERIODS_MIN = (1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 240, 360, 720, 1440)
PERIOD_WEIGHTS = (3, 2, 5, 4, 4, 2, 4, 5, 2, 1, 1, 1, 1, 2)


def generate(seed: int, functions: int = 400) -> Trace:
    """A day of `functions` synthetic functions, all drawn from `random.Random(seed)`."""
    if functions < 1:
        raise InvalidRequest(f"functions={functions} is invalid: must be >= 1")
    rng = random.Random(seed)
    kinds, weights = zip(*KINDS.items())
    out = []
    for i in range(functions):
        kind = rng.choices(kinds, weights)[0]
        times = [t for t in _ARRIVALS[kind](rng) if 0 <= t < DAY_S]
        counts = Counter(min(MINUTES - 1, int(t // 60)) for t in times)
        per_minute = tuple((m, min(MAX_PER_MINUTE, c)) for m, c in sorted(counts.items()))
        memory, duration = _memory_mb(rng), _duration_s(rng)
        if per_minute:
            key = hashlib.sha256(f"synthetic:{seed}:{i}:{kind}".encode()).hexdigest()
            out.append(TraceFunction(key, per_minute, duration, memory))
    return Trace(tuple(out), MINUTES)


def _memory_mb(rng: random.Random) -> float:
    """Burr XII (c 11.652, k 0.221, scale 107.083), inverted from a uniform; 32 MB to 4 GB."""
    u = rng.random()
    x = 107.083 * ((1 - u) ** (-1 / 0.221) - 1) ** (1 / 11.652)
    return float(round(min(4096.0, max(32.0, x))))


def _duration_s(rng: random.Random) -> float:
    return round(min(600.0, rng.lognormvariate(-0.38, 2.36)), 3)


def _poisson(rng: random.Random, rate_per_s: Callable[[float], float], peak_per_s: float) -> list[float]:
    """Arrivals of a Poisson process with a time-varying rate (thinning)."""
    out, t = [], 0.0
    while peak_per_s > 0:
        t += rng.expovariate(peak_per_s)
        if t >= DAY_S:
            return out
        if rng.random() * peak_per_s <= rate_per_s(t):
            out.append(t)
    return out


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _timer_once(rng: random.Random) -> list[float]:
    period = 60.0 * rng.choices(PERIODS_MIN, PERIOD_WEIGHTS)[0]
    t = rng.uniform(0, period)
    out = []
    while t < DAY_S:
        if rng.random() >= 0.02:
            out.append(t + rng.uniform(0, 2))  # a timer fires on time, its call lands within 2 s
        t += period
    return out


def timer(rng: random.Random) -> list[float]:
    out = _timer_once(rng)
    if rng.random() < 0.2:
        out += _timer_once(rng)
    if rng.random() < 0.33:
        rate = _log_uniform(rng, 1 / DAY_S, 1 / 600)
        out += _poisson(rng, lambda t: rate, rate)
    return out


def poisson(rng: random.Random) -> list[float]:
    rate = _log_uniform(rng, 1 / DAY_S, 0.5)
    return _poisson(rng, lambda t: rate, rate)


def diurnal(rng: random.Random) -> list[float]:
    mean = _log_uniform(rng, 10 / DAY_S, 0.5)
    amplitude, phase = rng.uniform(0.5, 1.5), rng.uniform(0, DAY_S)

    def rate(t: float) -> float:
        return mean * max(0.0, 1 + amplitude * math.sin(2 * math.pi * (t - phase) / DAY_S))

    return _poisson(rng, rate, mean * (1 + amplitude))


def bursty(rng: random.Random) -> list[float]:
    rate_on = _log_uniform(rng, 1 / 60, 1.0)
    off_scale = _log_uniform(rng, 60.0, 3 * 3600.0)
    out, t = [], rng.uniform(0, off_scale)
    while t < DAY_S:
        end = t + 120.0 * rng.lognormvariate(0, 1)
        while t < end:  # a session starts with a call, then calls at rate_on until it ends
            out.append(t)
            t += rng.expovariate(rate_on)
        t = end + off_scale * rng.paretovariate(1.2)
    return out


def rare(rng: random.Random) -> list[float]:
    out = []
    for _ in range(rng.randint(1, 12)):
        t = rng.uniform(0, DAY_S)
        out.append(t)
        for _ in range(rng.choice((0, 0, 0, 1, 2))):
            t += rng.uniform(5, 600)
            out.append(t)
    return out


KINDS = {"timer": 0.25, "poisson": 0.2, "diurnal": 0.1, "bursty": 0.15, "rare": 0.3}
_ARRIVALS: dict[str, Callable[[random.Random], list[float]]] = {
    "timer": timer, "poisson": poisson, "diurnal": diurnal, "bursty": bursty, "rare": rare,
}


def write_azure2019(trace: Trace, prefix: str | Path) -> None:
    """Write PREFIXinv.csv, PREFIXrun.csv and PREFIXmem.csv in the public dataset's columns."""
    keys = ("HashOwner", "HashApp", "HashFunction")
    with open(f"{prefix}inv.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*keys, "Trigger", *(str(m) for m in range(1, trace.minutes + 1))])
        for fn in trace.functions:
            row = [0] * trace.minutes
            for m, c in fn.per_minute:
                row[m] = c
            w.writerow([fn.key, fn.key, fn.key, "synthetic", *row])
    with open(f"{prefix}run.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*keys, "Average", "Count"])
        for fn in trace.functions:
            w.writerow([fn.key, fn.key, fn.key, round(fn.duration_s * 1000, 3), fn.invocations])
    with open(f"{prefix}mem.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["HashOwner", "HashApp", "SampleCount", "AverageAllocatedMb"])
        for fn in trace.functions:
            w.writerow([fn.key, fn.key, 1, fn.memory_mb])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mist.sim.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("prefix", help="write PREFIXinv.csv, PREFIXrun.csv, PREFIXmem.csv")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--functions", type=int, default=400)
    args = parser.parse_args(argv)
    write_azure2019(generate(args.seed, args.functions), args.prefix)


if __name__ == "__main__":
    main()
