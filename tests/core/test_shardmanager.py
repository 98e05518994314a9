import doctest
import random

import pytest

from mist.core import shardmanager
from mist.core.shardmanager import Load, ManagerConfig, ManagerState, rebalance, share, stage_merges
from mist.core.sharding import SPACE, Merge, Move, Parts, ShardMap, Split, point
from mist.errors import InvalidRequest

NO_SPLIT = dict(split_above=10.0, merge_below=0.0)  # to look at moves alone


def load_on(m, rates, owners=None):
    """A Load from per-shard rates given in map order."""
    return Load(dict(zip(m.starts, rates)), owners or sorted(set(m.owners)))


def owner_loads(m, rates):
    out = {}
    for owner, rate in zip(m.owners, rates):
        out[owner] = out.get(owner, 0.0) + rate
    return out


def function_load(m, function_rates):
    """Load as the owners would report it: per shard, from each function's parts."""
    shard_rates = dict.fromkeys(m.starts, 0.0)
    for fn, rate in function_rates.items():
        k = m.parts_of(fn)
        for p in range(k):
            shard_rates[m.starts[m.index(point(fn, p))]] += rate / k
    return shard_rates


def test_the_shards_of_a_lost_owner_go_at_once_heaviest_first_to_the_least_loaded():
    m = ShardMap((0, 1 << 60, 2 << 60, 3 << 60), ("a", "b", "c", "c"), (0, 0, 0, 0))
    rates = [10.0, 30.0, 8.0, 2.0]
    state = ManagerState(moved_at={2 << 60: 0.0, 3 << 60: 0.0})  # just moved: no matter, their owner is gone
    plan, _ = rebalance(load_on(m, rates, ["a", "b"]), m, now=1.0, state=state,
                        config=ManagerConfig(max_moves=0, **NO_SPLIT))
    assert plan.actions == (Move(2 << 60, "a"), Move(3 << 60, "a"))
    assert plan.orphans == 2 and plan.moves == 0


@pytest.mark.parametrize(
    ("rates", "moves"),
    [
        ([56.0, 44.0], 0),  # 1.12 x the mean: under the trigger (1.15), nothing moves
        ([58.0, 42.0], 1),  # 1.16: over it, so moves until the goal
    ],
)
def test_nothing_moves_until_the_most_loaded_owner_passes_the_trigger(rates, moves):
    m = ShardMap.uniform(8, ["a", "b"])
    per_shard = [rates[i % 2] / 4 for i in range(8)]  # a: shards 0 2 4 6, b: 1 3 5 7
    per_shard[0] -= 6.0
    per_shard[2] += 6.0  # a's shards unequal: 8.5, 20.5, 14.5, 14.5 (for 58)
    plan, _ = rebalance(load_on(m, per_shard), m, now=0.0, config=ManagerConfig(**NO_SPLIT))
    assert plan.moves == moves


def test_moves_bring_the_most_loaded_owner_to_the_goal_and_no_further():
    m = ShardMap.uniform(40, ["a", "b", "c", "d"])  # 10 shards each
    rates = [4.0 if owner == "a" else 1.0 for owner in m.owners]  # a 40, the others 10: mean 17.5
    plan, _ = rebalance(load_on(m, rates), m, now=0.0, config=ManagerConfig(max_moved=1.0, **NO_SPLIT))
    after = owner_loads(m.apply(plan.actions), rates)
    assert max(after.values()) <= 1.05 * 17.5
    assert plan.moves == 6  # a: 40 -> 20 after 5 moves of 4, still above 1.05 x 17.5 = 18.4; 16 after 6
    assert plan.expected == pytest.approx(max(after.values()) / 17.5)


def test_a_shard_that_moved_stays_put_for_the_dwell_time():
    m = ShardMap.uniform(4, ["a", "b"])
    plan, state = rebalance(load_on(m, [50.0, 5.0, 30.0, 5.0]), m, now=0.0, config=ManagerConfig(**NO_SPLIT))
    assert plan.actions == (Move(m.starts[2], "b"),)
    m = m.apply(plan.actions)
    flipped = [5.0, 5.0, 50.0, 30.0]  # now b is hot, and the best shard to give back is the one that came
    config = ManagerConfig(**NO_SPLIT)
    soon, _ = rebalance(load_on(m, flipped), m, now=599.0, state=state, config=config)
    later, _ = rebalance(load_on(m, flipped), m, now=600.0, state=state, config=config)
    assert Move(m.starts[2], "a") not in soon.actions
    assert later.actions == (Move(m.starts[3], "a"),) or Move(m.starts[2], "a") in later.actions


@pytest.mark.parametrize(
    ("config", "moves"),
    [
        (ManagerConfig(max_moves=100, max_moved=1.0, **NO_SPLIT), 2),  # unbounded: a 20 -> 16, b 10 -> 14
        (ManagerConfig(max_moves=1, max_moved=1.0, **NO_SPLIT), 1),
        (ManagerConfig(max_moves=100, max_moved=0.05, **NO_SPLIT), 1),  # 5 % of 30: the 1st move (2) passes it
    ],
)
def test_a_round_moves_no_more_than_its_budget(config, moves):
    m = ShardMap.uniform(20, ["a", "b"])
    rates = [2.0 if owner == "a" else 1.0 for owner in m.owners]  # a 20, b 10: mean 15
    plan, _ = rebalance(load_on(m, rates), m, now=0.0, config=config)
    assert plan.moves == moves


def test_a_hot_shard_is_split_at_its_midpoint_and_keeps_its_owner():
    m = ShardMap.uniform(4, ["a", "b"])
    plan, _ = rebalance(load_on(m, [12.0, 10.0, 8.0, 10.0]), m, now=0.0,
                        config=ManagerConfig(split_above=0.5, merge_below=0.0, trigger=2.0, goal=2.0))
    assert plan.actions == (Split(0, SPACE // 8),)  # 12 > 0.5 x 20; the others are not
    assert [s.owner for s in m.apply(plan.actions).shards()][:2] == ["a", "a"]


@pytest.mark.parametrize(("reported", "splits"), [({}, 1), ({"one": 9.0}, 1), ({"one": 10.0}, 0)])
def test_a_shard_hot_because_of_one_function_part_is_not_split(reported, splits):
    m = ShardMap.uniform(4, ["a", "b"])
    i = m.index(point("one"))
    rates = [20.0 if j == i else 2.0 for j in range(4)]  # only 20 > 0.3 x 13; "one" is in it
    config = ManagerConfig(max_parts=1, merge_below=0.0, trigger=2.0, goal=2.0)  # no cut: look at splits alone
    plan, _ = rebalance(Load(dict(zip(m.starts, rates)), ["a", "b"], reported), m, now=0.0, config=config)
    assert plan.splits == splits


@pytest.mark.parametrize(
    ("config", "splits"),
    [
        (dict(max_shards_per_owner=2), 0),  # 4 shards, 2 owners: full
        (dict(max_shards_per_owner=3), 2),  # room for 2 more
        (dict(max_splits=1), 1),
        (dict(min_width=SPACE // 4), 0),  # a quarter is narrower than twice the minimum
    ],
)
def test_splits_stop_at_their_limits(config, splits):
    m = ShardMap.uniform(4, ["a", "b"])
    plan, _ = rebalance(load_on(m, [10.0] * 4), m, now=0.0,
                        config=ManagerConfig(split_above=0.1, merge_below=0.0, min_shards_per_owner=1, **config))
    assert plan.splits == splits


def test_cold_neighbours_merge_under_the_busier_owner_down_to_the_minimum():
    m = ShardMap.uniform(8, ["a", "b"])
    rates = [0.1, 0.3, 40.0, 40.0, 0.2, 0.1, 9.0, 9.0]
    config = ManagerConfig(min_shards_per_owner=3, trigger=5.0, goal=5.0, split_above=1.0)
    plan, _ = rebalance(load_on(m, rates), m, now=0.0, config=config)
    assert plan.actions == (Merge(m.starts[0], "b"), Merge(m.starts[4], "a"))  # 2 merges: 8 -> 6 = 3 per owner
    merged = m.apply(plan.actions)
    assert len(merged) == 6 and merged.owners[0] == "b"


def test_a_just_split_shard_is_not_merged_back_and_a_merged_one_not_split():
    m = ShardMap.uniform(8, ["a", "b"])
    config = ManagerConfig()
    plan, state = rebalance(load_on(m, [30.0, 20.0, 20.0, 20.0, 20.0, 20.0, 30.0, 20.0]), m, now=0.0, config=config)
    assert plan.splits >= 1 and plan.merges == 0
    m = m.apply(plan.actions)
    rates = [15.0 if s.start < SPACE // 8 else 20.0 for s in m.shards()]  # the halves carry half each
    again, _ = rebalance(load_on(m, rates), m, now=10.0, state=state, config=config)
    assert again.merges == 0


@pytest.mark.parametrize(
    ("rate", "parts"),
    [
        (19.0, 1),  # the mean owner load is 100: 0.2 x 100 = 20 is the most one part may carry
        (25.0, 4),  # over it: cut into parts at most half full (10): 2.5 -> 4
        (41.0, 8),
        (1000.0, 128),
        (100000.0, 128),  # max_parts
    ],
)
def test_a_hot_function_is_cut_into_parts_half_full_once_it_passes_the_hot_key_share(rate, parts):
    m = ShardMap.uniform(64, [f"s{i}" for i in range(10)])
    rates = dict.fromkeys(m.starts, 1000.0 / 64)
    plan, _ = rebalance(Load(rates, sorted(set(m.owners)), {"hot": rate}), m, now=0.0,
                        config=ManagerConfig(max_parts=128))
    cuts = [a for a in plan.actions if isinstance(a, Parts)]
    assert cuts == ([Parts("hot", parts)] if parts > 1 else [])


@pytest.mark.parametrize(
    ("have", "rate", "now", "expected"),
    [
        (8, 50.0, 1000.0, None),  # 4 parts would carry 12.5 each, more than half the limit (20): kept at 8
        (8, 30.0, 1000.0, 4),  # 4 parts of 7.5: at most half full
        (8, 10.0, 1000.0, 1),  # one part would be half full: back to one at once
        (8, 10.0, 500.0, None),  # the same, but within the dwell of its last change
        (2, 10.0, 1000.0, 1),
        (2, 11.0, 1000.0, None),
    ],
)
def test_parts_shrink_to_as_few_as_keep_each_half_full_and_only_after_the_dwell(have, rate, now, expected):
    m = ShardMap.uniform(64, [f"s{i}" for i in range(10)]).apply([Parts("f", have)])
    rates = dict.fromkeys(m.starts, 1000.0 / 64)
    reported = {"f": rate} if rate else {}
    plan, state = rebalance(Load(rates, sorted(set(m.owners)), reported), m, now=now,
                            state=ManagerState(parts_at={"f": 0.0}))
    cuts = [a for a in plan.actions if isinstance(a, Parts)]
    assert cuts == ([Parts("f", expected)] if expected else [])
    assert state.parts_at.get("f") == (now if expected else (0.0 if now < 600 else None))


@pytest.mark.parametrize(
    ("floor", "expected"),
    [
        (0.0, 1),  # owners report every function with any load: an unlisted one is idle, back to one part
        (5.0, 1),  # at most 5 req/s: one part would be a quarter full (the limit is 0.2 x 100)
        (30.0, 4),  # up to 30 req/s: 4 parts keep each at most half full
        (45.0, None),  # up to 45: 8 parts may still be needed, kept
    ],
)
def test_a_cut_function_not_reported_is_taken_at_the_report_floor(floor, expected):
    owners = [f"s{i}" for i in range(10)]
    m = ShardMap.uniform(64, owners).apply([Parts("f", 8)])
    load = Load(dict.fromkeys(m.starts, 1000.0 / 64), owners, report_floor=floor)
    plan, _ = rebalance(load, m, now=1000.0)
    assert [a for a in plan.actions if isinstance(a, Parts)] == ([Parts("f", expected)] if expected else [])


def test_with_no_live_owner_nothing_is_planned():
    m = ShardMap.uniform(4, ["a", "b"])
    plan, _ = rebalance(Load(dict.fromkeys(m.starts, 1.0), []), m, now=0.0)
    assert plan.actions == ()


def test_same_inputs_give_the_same_plan():
    rng = random.Random(5)
    m = ShardMap.uniform(200, [f"s{i}" for i in range(20)])
    load = Load({s: rng.paretovariate(1.2) for s in m.starts}, sorted(set(m.owners)))
    assert rebalance(load, m, now=0.0) == rebalance(load, m, now=0.0)


def test_a_steady_skewed_load_settles_with_few_moves_and_no_thrashing():
    rng = random.Random(11)
    owners = [f"s{i:02d}" for i in range(20)]
    functions = {f"fn{i}": 1000.0 / (i + 1) for i in range(2000)}  # Zipf: fn0 is ~12 % of all
    rng.shuffle(owners)
    m, state = ShardMap.uniform(160, owners), ManagerState()
    moves, ratios = [], []
    for k in range(30):
        rates = function_load(m, functions)
        loads = owner_loads(m, [rates[s] for s in m.starts])
        ratios.append(max(loads.values()) / (sum(loads.values()) / len(owners)))
        plan, state = rebalance(Load(rates, owners, {f: r for f, r in functions.items() if r > 20}), m,
                                now=k * 60.0, state=state)
        moves.append(plan.moves)
        m = m.apply(plan.actions)
    assert ratios[0] > 2.4  # fn0 alone is 2.4x the mean owner load
    assert max(ratios[-10:]) <= 1.15  # settled under the trigger
    assert sum(moves[-10:]) == 0  # and stays put


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (ManagerConfig(goal=0.9), "goal"),
        (ManagerConfig(goal=1.2, trigger=1.1), "trigger"),
        (ManagerConfig(split_above=0.2, merge_below=0.15), "merge_below"),
        (ManagerConfig(min_shards_per_owner=10, max_shards_per_owner=5), "min_shards_per_owner"),
        (ManagerConfig(hot_key=0), "hot_key"),
        (ManagerConfig(max_moves=-1), "max_moves"),
    ],
)
def test_a_bad_config_names_the_key(config, key):
    with pytest.raises(InvalidRequest, match=f"shard manager: {key}"):
        config.validate()


def test_worked_example():
    assert doctest.testmod(shardmanager).failed == 0


@pytest.mark.parametrize("owners_before, live, expected", [
    (["a", "b"], ["a", "b"], {}),                                   # nothing new, nothing gone
    (["a"], ["a", "b"], {"b": 4}),                                  # a newcomer takes half
    (["a", "b"], ["a", "b", "c"], {"c": 2}),                        # 8 shards, 3 owners: 8 // 3
    (["a", "b"], ["a"], {"a": 4}),                                  # the gone owner's shards
    (["a", "b"], ["b", "c"], {"c": 4}),                             # a gone, c new: c adopts a's
    (["a", "b", "c"], ["c", "d"], {"c": 2, "d": 4}),                # orphans evened out by count
])
def test_share_gives_newcomers_a_fair_count_and_adopts_the_shards_of_gone_owners(owners_before, live, expected):
    m = ShardMap.uniform(8, owners_before)
    moves = share(m, live)
    got: dict[str, int] = {}
    for mv in moves:
        got[mv.to] = got.get(mv.to, 0) + 1
    assert got == expected
    after = m.apply(moves)
    counts = sorted(len(v) for v in after.owned().values())
    assert set(after.owners) <= set(live) and counts[-1] - counts[0] <= 1



S = ShardMap.uniform(4, ["a", "b"]).starts


@pytest.mark.parametrize(("merged_owner", "owners", "holders", "expected"), [
    # one owner in the map and holding both leases: merged at once
    ("a", "aabb", "aabb", (Merge(S[0], "a"),)),
    # the other shard is b's: it moves to a first (a graceful move), the merge waits
    ("a", "abab", "abab", (Move(S[1], "a"),)),
    # the merged owner is b, who has the right shard: a's moves to b
    ("b", "abab", "abab", (Move(S[0], "b"),)),
    # moved to a in the map, but b still holds the lease (calls in flight): nothing yet
    ("a", "aabb", "abbb", ()),
    # nobody holds the absorbed shard's lease yet: nothing yet
    ("a", "aabb", "a-bb", ()),
])
def test_a_merge_is_applied_only_once_its_owner_holds_both_leases_else_it_moves_first(merged_owner, owners, holders,
                                                                                          expected):
    m = ShardMap(S, tuple(owners), (0,) * 4)
    held = {s: (h if h != "-" else None) for s, h in zip(S, holders)}
    other = Split(S[3], S[3] + 1)  # other actions pass unchanged
    actions, state = stage_merges([Merge(S[0], merged_owner), other], m, held,
                                  ManagerState({S[0]: 1.0, S[2]: 1.0}))
    assert actions == (*expected, other)
    m.apply(actions)  # still a valid sequence
    # a merge put off has its dwell cleared (a later round proposes it again); others keep theirs
    assert dict(state.moved_at) == ({S[0]: 1.0, S[2]: 1.0} if expected == (Merge(S[0], "a"),) else {S[2]: 1.0})


def test_cold_neighbours_under_two_owners_merge_in_two_rounds_a_move_then_the_merge():
    m = ShardMap.uniform(8, ["a", "b"])
    rates = [0.1, 0.1, 40.0, 40.0, 9.0, 9.0, 9.0, 9.0]
    config = ManagerConfig(min_shards_per_owner=3, trigger=5.0, goal=5.0, split_above=1.0, max_merges=1)
    plan, state = rebalance(load_on(m, rates), m, now=0.0, config=config)
    assert plan.actions == (Merge(m.starts[0], "a"),)
    actions, state = stage_merges(plan.actions, m, dict(zip(m.starts, m.owners)), state)
    assert actions == (Move(m.starts[1], "a"),)
    m = m.apply(actions)  # a acquires shard 1's lease once b released it
    plan, state = rebalance(load_on(m, rates), m, now=5.0, state=state, config=config)
    actions, state = stage_merges(plan.actions, m, dict(zip(m.starts, m.owners)), state)
    assert actions == (Merge(m.starts[0], "a"),)
    assert len(m.apply(actions)) == 7
