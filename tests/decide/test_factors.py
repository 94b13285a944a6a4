import pytest

from advisor.decide.factors import (Factors, make_factors, parse_drop, parse_duration_s,
                                    parse_latency_ms, parse_size_mb)
from advisor.errors import FactorError


@pytest.mark.parametrize("text,points,rel", [("1%", 1.0, None), ("0.5", 0.5, None),
                                             ("2pp", 2.0, None), ("2%rel", 0.0, 0.02),
                                             ("rel:5%", 0.0, 0.05)])
def test_parse_drop(text, points, rel):
    assert parse_drop(text) == (points, rel)


@pytest.mark.parametrize("bad", ["", "abc", "-1%", "150%", "100%rel"])
def test_parse_drop_rejects(bad):
    with pytest.raises(FactorError):
        parse_drop(bad)


def test_units():
    assert parse_latency_ms("10ms") == 10 and parse_latency_ms("0.5s") == 500
    assert parse_size_mb("5MB") == 5 and parse_size_mb("512KB") == 0.5
    assert parse_duration_s("10m") == 600 and parse_duration_s("90s") == 90
    with pytest.raises(FactorError):
        parse_size_mb("5 parsecs")


def test_relative_drop_scales_with_baseline():
    f = Factors(max_drop=0.0, max_drop_relative=0.02)
    assert f.allowed_drop_points(0.90) == pytest.approx(1.8)
    assert Factors(max_drop=1.0).allowed_drop_points(0.5) == 1.0


def test_retrain_without_train_data_is_an_error():
    with pytest.raises(FactorError, match="--train-data"):
        make_factors(hardware="cpu", retrain="finetune", has_train_data=False)
    f = make_factors(hardware="cpu", retrain="finetune", has_train_data=True, budget="5m")
    assert f.retrain == "finetune" and f.budget_seconds == 300


def test_unknown_goal():
    with pytest.raises(FactorError, match="goal"):
        make_factors(hardware="cpu", goal="speed")


def test_unknown_measurement_settings_are_refused_before_any_work():
    """A measure= key the trials' latency measurement does not take used to fail every trial
    (TypeError inside each worker) and choose nothing; now it is a one-line FactorError."""
    import pytest

    from advisor.decide.factors import check_search_limits
    from advisor.errors import FactorError

    with pytest.raises(FactorError, match="unknown measurement setting.*hotspot_runs"):
        check_search_limits(max_trials=3, measure={"repeats": 5, "hotspot_runs": 3})
    check_search_limits(max_trials=3, measure={"repeats": 5, "warmup": 1, "max_seconds": 2.0,
                                               "processes": 1})
