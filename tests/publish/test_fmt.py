"""One rounding rule for each kind of number the pages print (publish.fmt)."""
import pytest

from ctac_helpers.publish import fmt


def test_one_rounding_rule_for_each_kind_of_number():
    assert fmt.auc(0.73549) == "0.735" and fmt.auc(0.7355) == "0.736"  # once, from the full value
    assert fmt.interval(0.7381, 0.6962, 0.7794, "auc") == "0.738 (0.696-0.779)"
    assert fmt.interval(3.673, 2.069, 6.5196, "hr") == "3.67 (2.07-6.52)"
    assert fmt.interval(12.34, float("nan"), 20.0, "percent") == "12.3"
    assert fmt.number(None, "risk", missing="n/a") == "n/a" and fmt.number(0.61234, "risk") == "0.612"
    # a negative bound, or a signed difference, joins the bounds with "to": "-0.30--0.05" would misread
    assert fmt.interval(-0.124, -0.301, -0.049, "coefficient") == "-0.12 (-0.30 to -0.05)"
    assert fmt.interval(0.0123, -0.0051, 0.0297, "auc", signed=True) == "+0.012 (-0.005 to +0.030)"
    assert fmt.number(0.0123, "auc", signed=True) == "+0.012" and fmt.number(-0.0123, "auc", signed=True) == "-0.012"
    assert fmt.interval(float("nan"), 0.1, 0.2, "coefficient") == ""
    with pytest.raises(ValueError, match="allowed: auc, risk, hr, coefficient, percent, years"):
        fmt.number(1.0, "odds")
