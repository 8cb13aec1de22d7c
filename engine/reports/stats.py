"""The statistics of the experiments report, in the standard library only.

- ``normal_sf(z)``: P(Z > z) for a standard normal Z, from ``math.erfc``.
- ``chi2_sf(x, df)``: P(X > x) for a chi-square X with ``df`` degrees of
  freedom (the regularised upper incomplete gamma Q(df/2, x/2): a series
  below a+1, a continued fraction above, as in Numerical Recipes §6.2).
- ``two_proportion_p(x1, n1, x2, n2)``: the two-sided p-value of the pooled
  two-proportion z-test of x1/n1 against x2/n2.
- ``uplift_ci(x0, n0, x1, n1)``: the relative uplift r1/r0 - 1 of a split
  over the control and its 95 % confidence interval, from the log of the
  rate ratio (Katz): se = sqrt(1/x1 - 1/n1 + 1/x0 - 1/n0).
- ``srm_p(counts)``: the sample-ratio-mismatch p-value: the chi-square
  goodness of fit of the visitors per split against an even split.

Undefined values (a control that never converted, a split without
converters, a single split) are None: reports print them as empty.
"""
import math

Z95 = 1.959963984540054     # the standard normal's 97.5th percentile


def normal_sf(z):
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def chi2_sf(x, df):
    if df <= 0:
        raise ValueError("degrees of freedom must be positive")
    if x <= 0:
        return 1.0
    a, y = df / 2.0, x / 2.0
    if y < a + 1.0:
        return max(0.0, 1.0 - _lower_series(a, y))
    return _upper_fraction(a, y)


def _lower_series(a, y, eps=1e-15):
    """P(a, y), the regularised lower incomplete gamma, by its series."""
    term = total = 1.0 / a
    k = a
    for _ in range(10_000):
        k += 1.0
        term *= y / k
        total += term
        if abs(term) < abs(total) * eps:
            break
    return total * math.exp(-y + a * math.log(y) - math.lgamma(a))


def _upper_fraction(a, y, eps=1e-15, tiny=1e-300):
    """Q(a, y) by its continued fraction (modified Lentz)."""
    b = y + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < eps:
            break
    return math.exp(-y + a * math.log(y) - math.lgamma(a)) * h


def two_proportion_p(x1, n1, x2, n2):
    if not (n1 and n2):
        return None
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return 1.0      # both rates 0 (or both 1): no evidence of a difference
    z = (x2 / n2 - x1 / n1) / se
    return 2.0 * normal_sf(abs(z))


def uplift_ci(x0, n0, x1, n1):
    """(uplift, ci_low, ci_high); None where undefined."""
    if not (n0 and n1) or x0 == 0:
        return None, None, None
    ratio = (x1 / n1) / (x0 / n0)
    if x1 == 0:
        return ratio - 1.0, None, None
    se = math.sqrt(1.0 / x1 - 1.0 / n1 + 1.0 / x0 - 1.0 / n0)
    log_ratio = math.log(ratio)
    return (ratio - 1.0, math.exp(log_ratio - Z95 * se) - 1.0,
            math.exp(log_ratio + Z95 * se) - 1.0)


def srm_p(counts):
    counts = list(counts)
    if len(counts) < 2 or not sum(counts):
        return None
    expected = sum(counts) / len(counts)
    statistic = sum((c - expected) ** 2 / expected for c in counts)
    return chi2_sf(statistic, len(counts) - 1)
