import pytest

from liftlm.segment import segment_ids, segment_spans


@pytest.mark.parametrize("n", [1, 7, 8, 9, 100, 257, 1000, 1234])
@pytest.mark.parametrize("length,stride", [(8, 3), (16, 6), (64, 24), (10, 10), (5, 1)])
def test_every_token_covered_in_order_with_the_paper_overlap(n, length, stride):
    spans = segment_spans(n, length, stride)
    covered = [0] * n
    for a, b in spans:
        for i in range(a, b):
            covered[i] += 1
    assert all(c >= 1 for c in covered), "a token is missing"
    starts = [a for a, _ in spans]
    assert starts == sorted(starts) and len(set(starts)) == len(starts), "segments out of order"
    assert spans[0][0] == 0 and spans[-1][1] == n
    if n <= length:
        assert spans == [(0, n)]
        return
    assert all(b - a == length for a, b in spans), "every segment is full length"
    regular = [(a, b) for a, b in spans if a % stride == 0]
    for (a1, b1), (a2, _) in zip(regular, regular[1:]):
        assert a2 - a1 == stride and b1 - a2 == length - stride  # overlap ℓ - s
    # the tail segment (if any) is aligned to the end and overlaps its predecessor
    if spans[-1][0] % stride:
        assert spans[-1] == (n - length, n) and spans[-2][1] > spans[-1][0]


def test_paper_setting_2048_768():
    spans = segment_spans(10_000, 2048, 768)
    assert spans[:3] == [(0, 2048), (768, 2816), (1536, 3584)]
    assert spans[-1] == (10_000 - 2048, 10_000)


def test_segment_ids_are_token_exact():
    ids = list(range(50))
    segs = segment_ids(ids, 16, 6)
    assert segs[0] == list(range(16)) and segs[1] == list(range(6, 22)) and segs[-1] == list(range(34, 50))


def test_empty_and_bad_arguments():
    assert segment_spans(0, 8, 3) == []
    with pytest.raises(ValueError):
        segment_spans(10, 8, 0)
    with pytest.raises(ValueError):
        segment_spans(10, 8, 9)
