"""How popular each function is over simulated time: Zipf by rank, a rotating hot set, flash crowds.

At any moment the function of rank r (0-based) has a base rate proportional to 1 / (r + 1)^zipf,
the shares summing to `total_rate`. Two things move it:

- a **rotation** every `rotate_every_s`: each of the `rotate_top` highest ranks is swapped with
  a rank drawn at random from the rest, and the changed functions fade linearly from their
  current rate to their new one over `rotate_ramp_s`;
- **flash crowds**, a Poisson process of mean gap `flash_every_s`: a random function gains
  `flash_share` x `total_rate`, ramping up over `flash_ramp_s`, holding `flash_hold_s`, and
  ramping down as fast as it came.

Most functions sit at their base rate most of the time, so the model answers in two parts: the
`base` list (changed only by rotations, which `advance` reports) and `overrides(t)`, the few
functions away from their base (fading or in a flash crowd), which keeps a round cheap with
100,000 functions.

    >>> import random
    >>> p = Popularity(4, zipf=1.0, total_rate=25.0, rng=random.Random(1), rotate_every_s=0, rotate_top=0,
    ...                rotate_ramp_s=0, flash_every_s=0, flash_share=0.0, flash_ramp_s=0, flash_hold_s=0)
    >>> sorted(round(r, 2) for r in p.base)  # 1, 1/2, 1/3, 1/4 of 25 / (25/12)
    [3.0, 4.0, 6.0, 12.0]
"""

from __future__ import annotations

import math
import random


class Popularity:
    def __init__(self, functions: int, *, zipf: float, total_rate: float, rng: random.Random,
                 rotate_every_s: float, rotate_top: int, rotate_ramp_s: float, flash_every_s: float,
                 flash_share: float, flash_ramp_s: float, flash_hold_s: float) -> None:
        self.n, self.total_rate, self.rng = functions, total_rate, rng
        self.rotate_every_s, self.rotate_top, self.rotate_ramp_s = rotate_every_s, rotate_top, rotate_ramp_s
        self.flash_every_s, self.flash_share = flash_every_s, flash_share
        self.flash_ramp_s, self.flash_hold_s = flash_ramp_s, flash_hold_s
        raw = [1.0 / (r + 1) ** zipf for r in range(functions)]
        norm = sum(raw)
        self.share_of_rank = [w / norm for w in raw]
        self.by_rank = list(range(functions))  # rank -> function
        rng.shuffle(self.by_rank)
        self.rank = [0] * functions  # function -> rank
        for r, f in enumerate(self.by_rank):
            self.rank[f] = r
        self.base = [self.share_of_rank[self.rank[f]] * total_rate for f in range(functions)]
        self.fading: dict[int, tuple[float, float]] = {}  # function -> (from, to) rates
        self.fade_start = -math.inf
        self.flashes: list[tuple[float, int]] = []  # (start, function)
        self.next_rotation = rotate_every_s if rotate_every_s > 0 else math.inf
        self.next_flash = self._gap()

    def _gap(self) -> float:
        return self.rng.expovariate(1.0 / self.flash_every_s) if self.flash_every_s > 0 else math.inf

    def advance(self, t: float) -> set[int]:
        """Bring the events up to time t; the functions whose base rate changed."""
        changed: set[int] = set()
        if self.fading and t - self.fade_start >= self.rotate_ramp_s:
            self.fading = {}
        while t >= self.next_rotation:
            changed |= self._rotate(self.next_rotation)
            self.next_rotation += self.rotate_every_s
        while t >= self.next_flash:
            self.flashes.append((self.next_flash, self.rng.randrange(self.n)))
            self.next_flash += self._gap()
        span = 2 * self.flash_ramp_s + self.flash_hold_s
        self.flashes = [(s, f) for s, f in self.flashes if t - s < span]
        return changed

    def _faded(self, t: float) -> dict[int, float]:
        if not self.fading:
            return {}
        a = min(1.0, (t - self.fade_start) / self.rotate_ramp_s) if self.rotate_ramp_s > 0 else 1.0
        return {f: old + a * (new - old) for f, (old, new) in self.fading.items()}

    def overrides(self, t: float) -> dict[int, float]:
        """Rates at time t of the functions away from their base rate."""
        out = self._faded(t)
        up, hold = self.flash_ramp_s, self.flash_hold_s
        for start, f in self.flashes:
            age = t - start
            if age < up:
                level = age / up
            elif age < up + hold:
                level = 1.0
            else:
                level = max(0.0, 1.0 - (age - up - hold) / up) if up > 0 else 0.0
            out[f] = out.get(f, self.base[f]) + level * self.flash_share * self.total_rate
        return out

    def above(self, threshold: float, overrides: dict[int, float]) -> dict[int, float]:
        """Functions whose rate is above `threshold`, with their rates."""
        out = {f: r for f, r in overrides.items() if r > threshold}
        for r, share in enumerate(self.share_of_rank):
            if share * self.total_rate <= threshold:
                break
            f = self.by_rank[r]
            rate = overrides.get(f, self.base[f])
            if rate > threshold:
                out[f] = rate
        return out

    def _rotate(self, t: float) -> set[int]:
        levels = self._faded(t)
        changed = set(self.fading)
        for r in range(self.rotate_top):
            other = self.rng.randrange(self.rotate_top, self.n)
            f, g = self.by_rank[r], self.by_rank[other]
            self.by_rank[r], self.by_rank[other] = g, f
            self.rank[f], self.rank[g] = other, r
            changed.update((f, g))
        self.fading = {}
        for f in sorted(changed):
            before = levels.get(f, self.base[f])
            self.base[f] = self.share_of_rank[self.rank[f]] * self.total_rate
            self.fading[f] = (before, self.base[f])
        self.fade_start = t
        return changed
