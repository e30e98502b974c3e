import pytest

from web.cursor import Cursor, CursorError


def test_round_trip():
    c = Cursor("1", (0, 5, 17))
    assert Cursor.decode(c.encode()) == c
    assert c.advanced(1, 9).offsets == (0, 10, 17)


@pytest.mark.parametrize("text", ["", "1", "1.", "1.a-b", "x y.1", "1.1--2", "1." + "-".join(["1"] * 2000)])
def test_malformed(text):
    with pytest.raises(CursorError):
        Cursor.decode(text)
