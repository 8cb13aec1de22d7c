"""engine/reports/stats.py against closed forms and published table values,
and engine/reports/timerange.py's ranges."""
import math
from statistics import NormalDist

import pytest

from engine.reports import stats
from engine.reports.timerange import RangeError, parse_range


@pytest.mark.parametrize("z", [0.0, 0.5, 1.0, 1.959963984540054, 2.5758293035489, 4.0, -1.3])
def test_normal_sf_equals_one_minus_the_cdf(z):
    assert stats.normal_sf(z) == pytest.approx(1 - NormalDist().cdf(z), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("x", [0.001, 0.5, 1.0, 2.0, 3.841458820694124, 10.0, 40.0])
def test_chi2_sf_with_closed_forms(x):
    # df=1: 2·P(Z > sqrt x); df=2: e^(-x/2); df=4: e^(-x/2)(1 + x/2)
    assert stats.chi2_sf(x, 1) == pytest.approx(2 * (1 - NormalDist().cdf(math.sqrt(x))),
                                                rel=1e-9, abs=1e-15)
    assert stats.chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)
    assert stats.chi2_sf(x, 4) == pytest.approx(math.exp(-x / 2) * (1 + x / 2), rel=1e-12)


@pytest.mark.parametrize("x,df,p", [(3.841, 1, 0.05), (7.815, 3, 0.05), (11.345, 3, 0.01),
                                    (18.307, 10, 0.05), (23.209, 10, 0.01)])
def test_chi2_sf_matches_the_tables(x, df, p):
    assert stats.chi2_sf(x, df) == pytest.approx(p, rel=2e-3)


def test_two_proportion_p_by_hand():
    # 100/1000 vs 150/1000: pooled 0.125, se = sqrt(.125·.875·.002), z = .05/se
    z = 0.05 / math.sqrt(0.125 * 0.875 * 0.002)
    assert stats.two_proportion_p(100, 1000, 150, 1000) == pytest.approx(
        2 * (1 - NormalDist().cdf(z)), rel=1e-12)
    assert stats.two_proportion_p(0, 10, 0, 10) == 1.0
    assert stats.two_proportion_p(1, 0, 1, 10) is None


def test_uplift_ci_by_hand():
    uplift, low, high = stats.uplift_ci(100, 1000, 150, 1000)
    se = math.sqrt(1 / 150 - 1 / 1000 + 1 / 100 - 1 / 1000)
    assert uplift == pytest.approx(0.5)
    assert low == pytest.approx(1.5 * math.exp(-1.959963984540054 * se) - 1)
    assert high == pytest.approx(1.5 * math.exp(1.959963984540054 * se) - 1)
    assert low < uplift < high
    assert stats.uplift_ci(0, 100, 5, 100) == (None, None, None)
    assert stats.uplift_ci(5, 100, 0, 100) == (-1.0, None, None)


def test_srm_p():
    assert stats.srm_p([500, 500]) == 1.0
    assert stats.srm_p([1000]) is None
    # 450 vs 550: chi2 = 2·50²/500 = 10 with 1 df
    assert stats.srm_p([450, 550]) == pytest.approx(stats.chi2_sf(10.0, 1))
    assert stats.srm_p([450, 550]) < 0.01


def test_ranges():
    day = 86_400_000
    start, end = parse_range("1970-01-02", "1970-01-03")
    assert (start, end) == (day, 3 * day)          # the --until day is included
    assert parse_range("1970-01-02T00:00:01Z", "1970-01-02T03:00:00+01:00") == (
        day + 1000, day + 2 * 3_600_000)          # a time's end is excluded, offsets honoured
    assert parse_range()[0] == 0
    with pytest.raises(RangeError, match="--since"):
        parse_range("yesterday")
    with pytest.raises(RangeError, match="after"):
        parse_range("1970-01-05", "1970-01-01")
