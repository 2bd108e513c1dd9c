"""Heads and configuration labels: parsing, normalising, refusing what is not a head."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sprint_lab import BASELINE, Head, all_heads, config_label, is_baseline, parse_config
from sprint_lab.core.heads import as_heads


def test_label_round_trip() -> None:
    for head in (Head(0, 0), Head(3, 5), Head(29, 8)):
        assert Head.parse(head.label) == head
        assert str(head) == head.label
    assert Head.parse(" l3 h5 ") == Head(3, 5)  # case and spaces are tolerated
    assert Head.parse(Head(1, 2)) == Head(1, 2)


@pytest.mark.parametrize("text", ["L3", "H5", "L-1H2", "L3H5x", "", "none", "3,5"])
def test_bad_labels_raise(text: str) -> None:
    with pytest.raises(ValueError, match="not a head label"):
        Head.parse(text)


@pytest.mark.parametrize("layer, head", [(-1, 0), (0, -2), (True, 1), (1.0, 2), ("1", 2)])
def test_head_fields_must_be_non_negative_ints(layer, head) -> None:
    with pytest.raises(ValueError, match="non-negative int"):
        Head(layer, head)


def test_as_heads_reads_every_spelling() -> None:
    assert as_heads(["L0H1", (2, 3), [4, 5], Head(6, 7)]) == [
        Head(0, 1),
        Head(2, 3),
        Head(4, 5),
        Head(6, 7),
    ]


@pytest.mark.parametrize("item", [(True, 1), (0.9, 1.9), (1, 2, 3), 7, None, (1.0, 2)])
def test_as_heads_refuses_bools_floats_and_odd_shapes(item) -> None:
    with pytest.raises(ValueError, match="cannot read a head"):
        as_heads([item])


def test_config_labels_and_the_one_parser() -> None:
    assert config_label(None) == BASELINE == "none"
    assert config_label([]) == BASELINE
    assert config_label(Head(3, 5)) == "L3H5"
    assert config_label(["L3H5", (7, 2)]) == "L3H5+L7H2"
    assert parse_config("none") == ()
    assert parse_config("L3H5") == (Head(3, 5),)
    assert parse_config("L3H5+L7H2") == (Head(3, 5), Head(7, 2))
    for label in ("none", "L3H5", "L3H5+L7H2"):
        assert config_label(parse_config(label)) == label
    assert is_baseline("none") and not is_baseline("L0H0")
    with pytest.raises(ValueError):
        parse_config("L3H5+")


def test_all_heads_orders_layer_major_and_checks_layers() -> None:
    model = SimpleNamespace(n_layers=3, n_heads=2)
    assert [h.label for h in all_heads(model, layers=[2, 0])] == ["L2H0", "L2H1", "L0H0", "L0H1"]
    assert len(all_heads(model)) == 6
    with pytest.raises(ValueError, match="unknown layer 3"):
        all_heads(model, layers=[3])
    with pytest.raises(ValueError, match="repeat"):
        all_heads(model, layers=[1, 1])
