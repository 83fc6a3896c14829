"""Cost of the feature step against the number of cards held in state.

For 10,000, 100,000 and 1,000,000 distinct cards (synthetic ids), every card
starts with the state of a card that has a few transactions behind it (taken
from a pool of states built by real updates), then transactions on cards
drawn uniformly at random are pushed through ``bench.featurepath``: state
pickled as the job keeps it, and, for comparison, held as Python objects.
Terminals are 10,000, as in the handbook data.

What this leaves out: Flink keeps keyed state in the JVM (heap state
backend here) and the Python side caches ``python.state.cache-size`` keys
(the job sets 100,000); beyond that, a state read crosses to the JVM. Those
costs only show in the job itself.
"""

from __future__ import annotations

import logging
import pickle
import statistics
import time

import numpy as np

from bench.featurepath import FeaturePath
from udfs.features import MS_PER_DAY

logger = logging.getLogger(__name__)

SIZES = (10_000, 100_000, 1_000_000)
POOL_CARDS = 1_000
TERMINALS = 10_000
START_MS = 1_530_403_200_000  # 2018-07-01T00:00:00Z


def run(updates: int, progress, sizes=SIZES, seed: int = 11) -> dict:
    rng = np.random.default_rng(seed)
    pool = _state_pool(rng)
    results = {}
    for size in sizes:
        results[str(size)] = {}
        for pickled in (True, False):
            path = FeaturePath(pickled=pickled)
            path.preload_cards(_states(pool, size, copy=not pickled))
            rate = _timed_updates(path, size, updates, rng)
            label = "pickled" if pickled else "objects"
            results[str(size)][label] = rate
            progress(f"state   {size:>9,} cards, state {label:<7}: {rate:>9,.0f} tx/s")
            del path
    return {
        "updates_per_size": updates,
        "terminals": TERMINALS,
        "rows_per_second": results,
    }


def _state_pool(rng) -> list:
    """States of cards after three to six transactions over a few days."""
    path = FeaturePath()
    for card in range(POOL_CARDS):
        t = START_MS - 5 * MS_PER_DAY
        for n in range(int(rng.integers(3, 7))):
            t += int(rng.integers(1, 30 * 3_600_000))
            path.update(
                f"pool-{card}-{n}",
                t,
                card,
                f"t{int(rng.integers(TERMINALS))}",
                float(rng.gamma(2.0, 30.0)),
            )
    return [path.cards[card] for card in range(POOL_CARDS)]


def _states(pool: list, size: int, copy: bool) -> dict:
    """``size`` cards with pool states; ``copy`` gives each its own objects.

    Without ``copy`` the states are shared, for a path that pickles them on
    load (each card then gets its own bytes).
    """
    if not copy:
        return {f"card-{i}": pool[i % len(pool)] for i in range(size)}
    blobs = [pickle.dumps(state, pickle.HIGHEST_PROTOCOL) for state in pool]
    return {f"card-{i}": pickle.loads(blobs[i % len(blobs)]) for i in range(size)}


def _timed_updates(path: FeaturePath, size: int, updates: int, rng) -> float:
    cards = rng.integers(size, size=updates)
    terminals = rng.integers(TERMINALS, size=updates)
    amounts = rng.gamma(2.0, 30.0, size=updates)
    # Two transactions a second across all cards, from the pool's end on.
    times = START_MS + np.arange(updates) * 500
    ids = [f"tx-{i}" for i in range(updates)]
    card_ids = [f"card-{c}" for c in cards]
    terminal_ids = [f"t{t}" for t in terminals]
    update = path.update
    rates = []
    # Three consecutive thirds, the median kept: robust to a busy neighbour.
    for chunk in np.array_split(np.arange(updates), 3):
        started = time.perf_counter()
        for i in chunk:
            update(
                ids[i], int(times[i]), card_ids[i], terminal_ids[i], float(amounts[i])
            )
        rates.append(len(chunk) / (time.perf_counter() - started))
    return statistics.median(rates)
