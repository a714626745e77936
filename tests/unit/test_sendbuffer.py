from hypothesis import given
from hypothesis import strategies as st

from seqstream.sendbuffer import SendBuffer


@given(st.lists(st.binary(max_size=50), max_size=20), st.data())
def test_sendbuffer_matches_a_bytes_model(chunks, data):
    buf = SendBuffer()
    model = b""
    for chunk in chunks:
        buf.append(chunk)
        model += chunk
    base = data.draw(st.integers(0, len(model)))
    buf.release_below(base)
    assert (buf.base, buf.end, len(buf)) == (base, len(model), len(model) - base)
    for _ in range(5):
        start = data.draw(st.integers(base, len(model)))
        end = data.draw(st.integers(start, len(model)))
        assert buf.slice(start, end) == model[start:end]
