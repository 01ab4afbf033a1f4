"""The profile format (compiler/profile.py): JSON round trip, versions, errors, fitting."""

from __future__ import annotations

import json

import pytest

import graphserve as gs
from graphserve.compiler.profile import (
    PROFILE_VERSION,
    QUANTILE_LEVELS,
    Distribution,
    Profile,
    batch_service,
    fingerprint,
    fit_line,
)
from graphserve.errors import ProfileError
from tests.graphs import sim_graphs


@pytest.fixture(scope="module")
def profile():
    plan = gs.build(sim_graphs.conditional)
    costs = {"cheap.__call__": Distribution.of([0.001, 0.002, 0.003]), "expensive.__call__": 0.02}
    return Profile.assumed(plan, costs, paths=[({"switch": 0}, 0.1), ({"switch": 1}, 0.9)])


def test_a_profile_round_trips_through_json_byte_for_byte(profile):
    text = profile.to_json()
    again = Profile.from_json(text)
    assert again == profile
    assert again.to_json() == text
    data = json.loads(text)
    assert data["version"] == PROFILE_VERSION and list(data) == sorted(data)
    assert len(data["nodes"][0]["latency"]["quantiles_s"]) == len(QUANTILE_LEVELS) == 119


def test_a_profile_file_loads(profile, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(profile.to_json())
    assert Profile.load(str(path)) == profile


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not JSON"),
        ('{"version": 99}', "profile version 99 is not supported"),
        ('{"version": 1, "graph": "g"}', "is not a graphserve profile: fingerprint: Field required"),
    ],
)
def test_a_bad_profile_is_a_clear_error(text, message):
    with pytest.raises(ProfileError, match=message):
        Profile.from_json(text)


def test_a_missing_profile_file_is_named(tmp_path):
    with pytest.raises(ProfileError, match=r"cannot read profile '.*nope.json'"):
        Profile.load(str(tmp_path / "nope.json"))


def test_the_fingerprint_ignores_tunables_but_not_structure():
    plan = gs.build(sim_graphs.single)
    tuned = plan.model_copy(deep=True)
    tuned.deployments[0].num_replicas = 4
    tuned.deployments[0].max_ongoing_requests = 7
    assert fingerprint(tuned) == fingerprint(plan)
    assert fingerprint(gs.build(sim_graphs.fanout)) != fingerprint(plan)


def test_a_profile_from_another_graph_names_the_difference(profile):
    profile.check_fits(gs.build(sim_graphs.conditional))
    with pytest.raises(ProfileError, match=r"nodes not in the profile: Sleeper\.__call__"):
        profile.check_fits(gs.build(sim_graphs.single))


def test_distributions_keep_quantiles_and_sample_between_them():
    dist = Distribution.of([float(i) for i in range(1, 101)])
    assert dist.count == 100 and dist.mean_s == 50.5 and dist.max_s == 100
    assert dist.p50_s == pytest.approx(50.5) and dist.p99_s == pytest.approx(99.01)
    assert dist.sample(0.0) == 1 and dist.sample(0.5) == pytest.approx(50.5)
    assert dist.sample(0.999999) == pytest.approx(100, abs=0.01)
    with pytest.raises(ProfileError):
        Distribution.of([])


def test_a_rare_outlier_keeps_its_own_weight():
    """1 pause of 1 s among 1000 samples of 10 ms: drawn about 0.1% of the time, not spread over the top 1%."""
    dist = Distribution.of([0.010] * 999 + [1.0])
    draws = [dist.sample(i / 100_000) for i in range(100_000)]
    assert QUANTILE_LEVELS[:3] == (0.0, 0.01, 0.02) and QUANTILE_LEVELS[99:101] == (0.99, 0.991)
    assert QUANTILE_LEVELS[-2:] == (0.9999, 1.0)
    assert sum(d > 0.1 for d in draws) / len(draws) == pytest.approx(0.0009, abs=0.0002)
    assert sum(draws) / len(draws) == pytest.approx(0.010 + 0.001 * 0.99 / 2, rel=0.1)
    assert dist.sample(0.5) == 0.010


def test_the_batch_cost_line_and_interpolation():
    fit = fit_line([(1, 0.012), (2, 0.014), (8, 0.026)])
    assert fit.fixed_s == pytest.approx(0.010) and fit.per_item_s == pytest.approx(0.002)
    plan = gs.build(sim_graphs.batched)
    points = Profile.assumed(plan, {"Batched.predict": {1: 0.012, 8: 0.026}}).nodes[0].batches
    assert batch_service(points, 4, 0.5) == pytest.approx(0.018)
    assert batch_service(points, 16, 0.5) == pytest.approx(0.042)  # beyond: the same line
