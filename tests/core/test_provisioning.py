import pytest

from mist.core.provisioning import Asked, Plan, ProvisionConfig, billable_until, reconcile, retry_s

F1, F2, G1 = ("f", 1), ("f", 2), ("g", 1)
CONFIG = ProvisionConfig(settle_s=5.0, retry_s=2.0, max_retry_s=30.0)


@pytest.mark.parametrize(
    ("wanted", "held", "asked", "now", "expected"),
    [
        pytest.param({F1: 1}, {}, {}, 100.0, Plan(provision=(F1,)), id="never-asked-and-held-nowhere-is-provisioned"),
        pytest.param({F1: 1}, {F1: {"w2": 1}}, {}, 100.0, Plan(), id="held-on-a-live-worker-needs-nothing"),
        pytest.param({F1: 2}, {F1: {"w2": 1}}, {}, 100.0, Plan(),
                     id="held-below-min-is-left-to-the-holders-reaper-not-duplicated"),
        pytest.param({F1: 1}, {F1: {"w1": 0}}, {}, 100.0, Plan(provision=(F1,)),
                     id="a-worker-reporting-no-provisioned-instance-does-not-hold-it"),
        pytest.param({F2: 1}, {F1: {"w1": 1}}, {}, 100.0, Plan(provision=(F2,)),
                     id="an-older-version-held-does-not-count-for-the-new-one"),
        pytest.param({F1: 1}, {}, {F1: Asked(99.0)}, 100.0, Plan(), id="not-asked-again-while-an-order-is-in-flight"),
        pytest.param({F1: 1}, {}, {F1: Asked(96.0, done=True)}, 100.0, Plan(),
                     id="an-answered-order-waits-for-its-workers-report"),
        pytest.param({F1: 1}, {}, {F1: Asked(95.0, done=True)}, 100.0, Plan(provision=(F1,)),
                     id="asked-again-when-no-report-came-within-the-settle-time"),
        pytest.param({F1: 1}, {}, {F1: Asked(99.0, done=True, failures=1)}, 100.0, Plan(),
                     id="backs-off-after-a-failure"),
        pytest.param({F1: 1}, {}, {F1: Asked(98.0, done=True, failures=1)}, 100.0, Plan(provision=(F1,)),
                     id="retries-once-the-backoff-ran-out"),
        pytest.param({F1: 1}, {}, {F1: Asked(94.0, done=True, failures=3)}, 100.0, Plan(),
                     id="the-backoff-doubles-per-consecutive-failure"),
        pytest.param({F1: 1}, {F1: {"w1": 1, "w2": 1}}, {}, 100.0, Plan(release=((F1, "w2"),)),
                     id="a-second-holder-is-released-ties-by-id"),
        pytest.param({F1: 2}, {F1: {"w1": 1, "w2": 2, "w3": 1}}, {}, 100.0,
                     Plan(release=((F1, "w1"), (F1, "w3"))), id="the-largest-holder-is-kept"),
        pytest.param({F1: 3}, {F1: {"w1": 2, "w2": 2}}, {}, 100.0, Plan(),
                     id="holders-together-needed-for-min-are-all-kept"),
        pytest.param({}, {F1: {"w1": 1}}, {F1: Asked(10.0, done=True)}, 100.0, Plan(),
                     id="a-version-no-longer-wanted-gets-nothing"),
        pytest.param({G1: 1, F1: 1}, {}, {}, 100.0, Plan(provision=(F1, G1)), id="several-versions-in-order"),
    ],
)
def test_reconcile(wanted, held, asked, now, expected):
    assert reconcile(wanted, held, asked, now, CONFIG) == expected


def test_the_worked_example_of_the_module():
    wanted, asked = {("f", 3): 1}, {("f", 3): Asked(10.0, done=True)}
    assert reconcile(wanted, {}, asked, 100.0, CONFIG).provision == (("f", 3),)
    asked = {("f", 3): Asked(101.0)}
    assert reconcile(wanted, {}, asked, 101.5, CONFIG) == Plan()
    asked = {("f", 3): asked[("f", 3)].answered(True, 102.0)}
    assert reconcile(wanted, {}, asked, 104.0, CONFIG) == Plan()
    assert reconcile(wanted, {("f", 3): {"w2": 1}}, asked, 105.0, CONFIG) == Plan()
    failed = Asked(101.0).answered(False, 102.0)
    assert [reconcile(wanted, {}, {("f", 3): failed}, t, CONFIG).provision for t in (103.9, 104.0)] == [(), (("f", 3),)]


@pytest.mark.parametrize(("failures", "expected"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (60, 30.0)])
def test_retry_delays_double_up_to_the_cap(failures, expected):
    assert retry_s(failures, CONFIG) == expected


def test_answers_count_consecutive_failures_and_a_success_resets_them():
    a = Asked.sent(Asked.sent(None, 0.0).answered(False, 1.0), 2.0)
    assert (a.failures, a.at, a.done) == (1, 2.0, False)
    a = a.answered(False, 3.0)
    assert (a.failures, a.at, a.done) == (2, 3.0, True)
    assert a.answered(True, 4.0).failures == 0


@pytest.mark.parametrize("config", [ProvisionConfig(retry_s=0), ProvisionConfig(retry_s=5, max_retry_s=1),
                                    ProvisionConfig(settle_s=-1)])
def test_bad_settings_are_refused_naming_them(config):
    with pytest.raises(ValueError, match="retry_s"):
        config.validate()


def _span(start: int, end: int, seq: int = 1) -> dict:
    return {"seq": seq, "function": "f", "version": 1, "start_ms": start, "end_ms": end}


@pytest.mark.parametrize(
    ("spans", "cut", "expected"),
    [
        pytest.param([], 10_000, [], id="nothing-to-bill"),
        pytest.param([_span(0, 5_000)], 10_000, [_span(0, 5_000)], id="ended-before-the-cut-is-kept-whole"),
        pytest.param([_span(0, 10_000)], 10_000, [_span(0, 10_000)], id="ending-at-the-cut-is-kept-whole"),
        pytest.param([_span(4_000, 30_000)], 10_000, [_span(4_000, 10_000)], id="across-the-cut-ends-at-it"),
        pytest.param([_span(10_000, 30_000)], 10_000, [], id="starting-at-the-cut-is-the-replacements"),
        pytest.param([_span(0, 4_000, 1), _span(4_000, 12_000, 2), _span(12_000, 20_000, 3)], 10_000,
                     [_span(0, 4_000, 1), _span(4_000, 10_000, 2)], id="a-run-of-spans-keeps-its-order-and-numbers"),
    ],
)
def test_a_cut_off_workers_provisioned_time_is_billed_up_to_when_it_could_be_taken_for_lost(spans, cut, expected):
    assert billable_until(spans, cut) == expected
