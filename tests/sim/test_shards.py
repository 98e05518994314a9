import doctest
import json
import random

import pytest
from typer.testing import CliRunner

from mist.cli.main import app
from mist.core.shardmanager import ManagerConfig
from mist.errors import InvalidRequest
from mist.sim import popularity, shards
from mist.sim.popularity import Popularity
from mist.sim.shards import Scenario, simulate

SMALL = dict(owners=20, functions=2000, hours=1.0)


def quiet(**changes):
    """Popularity with nothing on unless asked."""
    args = dict(zipf=1.0, total_rate=1000.0, rng=random.Random(1), rotate_every_s=0, rotate_top=0, rotate_ramp_s=0,
                flash_every_s=0, flash_share=0.0, flash_ramp_s=0, flash_hold_s=0)
    args.update(changes)
    return Popularity(100, **args)


def test_a_rotation_hands_the_top_ranks_to_others_and_fades_in():
    p = quiet(rotate_every_s=600, rotate_top=10, rotate_ramp_s=100)
    top = p.by_rank[0]
    assert p.advance(599) == set()
    changed = p.advance(600)
    new_top = p.by_rank[0]
    assert new_top != top and {top, new_top} <= changed
    full = p.base[new_top]
    assert p.overrides(600)[new_top] < full / 10  # it starts from its old rank's rate
    assert p.overrides(650)[new_top] == pytest.approx((p.overrides(600)[new_top] + full) / 2)
    p.advance(700)
    assert new_top not in p.overrides(700)  # faded in: at its base rate again


def test_a_flash_crowd_ramps_up_holds_and_goes():
    p = quiet(flash_every_s=1000, flash_share=0.1, flash_ramp_s=60, flash_hold_s=600)
    p.advance(10_000)
    start, f = p.flashes[-1] if p.flashes else (None, None)
    assert f is not None
    extra = [p.overrides(start + dt).get(f, p.base[f]) - p.base[f] for dt in (30, 60, 600, 690)]
    assert extra == pytest.approx([50.0, 100.0, 100.0, 50.0])


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    half_hour = {**SMALL, "hours": 0.5}
    first, again = simulate(Scenario(**half_hour, seed=4)), simulate(Scenario(**half_hour, seed=4))
    assert first == again
    assert simulate(Scenario(**half_hour, seed=5)) != first


def test_the_manager_keeps_owners_near_the_mean_where_a_static_map_cannot():
    managed = simulate(Scenario(**{**SMALL, "hours": 2}))[1]
    static = simulate(Scenario(**{**SMALL, "hours": 2}, manager=False))[1]
    assert managed.p50_imbalance <= 1.2
    assert managed.p90_imbalance <= 1.3
    assert static.p50_imbalance > 2  # the top function alone is 2.4x a mean owner's load
    assert managed.moves > 0 and static.moves == 0


def test_without_cutting_hot_functions_no_amount_of_moving_helps():
    no_parts = simulate(Scenario(**{**SMALL, "hours": 2}, config=ManagerConfig(max_parts=1)))[1]
    assert no_parts.p50_imbalance > 2 and no_parts.cut_functions == 0


def test_a_lost_owners_shards_find_new_owners():
    hour = simulate(Scenario(**SMALL, fail_every_s=120))[0]
    assert hour.owners_lost >= 10 and hour.orphans >= 10 * 5  # 16 shards each at the start, fewer after merges
    assert hour.p50_imbalance <= 1.3


@pytest.mark.parametrize(
    ("changes", "key"),
    [(dict(owners=0), "owners"), (dict(hours=0), "hours"), (dict(rotate_top=3000), "rotate_top"),
     (dict(config=ManagerConfig(goal=0.5)), "shard manager: goal")],
)
def test_a_bad_scenario_names_the_key(changes, key):
    with pytest.raises(InvalidRequest, match=key):
        simulate(Scenario(**{**SMALL, **changes}))


def test_simulate_shards_prints_one_json_object_per_hour_with_the_sustained_rate():
    result = CliRunner().invoke(app, ["simulate-shards", "--owners", "20", "--functions", "2000", "--hours", "1",
                                      "--owner-rate", "10000", "--json"])
    assert result.exit_code == 0, result.output
    hours = json.loads(result.stdout)
    assert len(hours) == 1 and hours[0]["rounds"] == 720
    assert hours[0]["sustained_rate"] == pytest.approx(20 * 10000 / hours[0]["p99_imbalance"])


def test_simulate_shards_refuses_a_bad_value_with_exit_status_2():
    result = CliRunner().invoke(app, ["simulate-shards", "--owners", "0"])
    assert result.exit_code == 2
    assert "owners must be >= 1" in result.output


@pytest.mark.parametrize("module", [popularity, shards])
def test_worked_examples(module):
    assert doctest.testmod(module).failed == 0
