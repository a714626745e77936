from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from seqstream.rangeset import RangeSet

spans = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1])), max_size=30)


def as_set(ranges):
    return {v for s, e in ranges for v in range(s, e)}


@given(spans, st.integers(0, 250), st.integers(0, 60))
def test_rangeset_matches_a_set_model(ranges, probe, width):
    rs = RangeSet(ranges)
    model = as_set(ranges)
    assert as_set(rs) == model
    pairs = list(rs)
    assert all(s < e for s, e in pairs)
    assert all(a[1] < b[0] for a, b in pairwise(pairs)), "ranges must be disjoint and non-touching"
    assert rs.contains(probe) == (probe in model)
    window = set(range(probe, probe + width))
    assert rs.covers(probe, probe + width) == window.issubset(model)
    assert as_set(rs.missing(probe, probe + width)) == window - model


@given(spans, st.integers(0, 250))
def test_discard_below(ranges, cut):
    rs = RangeSet(ranges)
    rs.discard_below(cut)
    assert as_set(rs) == {v for v in as_set(ranges) if v >= cut}
