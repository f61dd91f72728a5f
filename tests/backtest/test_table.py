"""Curves tables: validation with one-line errors, round trips, and the replay draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stagewise.backtest.draw import default_cells, draw, parse_cells
from stagewise.backtest.synthetic import SyntheticSpec, synthetic_rows
from stagewise.backtest.table import CurveRow, CurvesError, build_table, read_curves, write_curves

HEADER = "condition_id,budget_seconds,seed,host,val_bpb\n"


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "c.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        ("a,10,1,h,1.0\n", "condition_id,seed,host,val_bpb\n", "missing column(s) budget_seconds"),
        ("a,10,1,h,1.0\nb,10,1,h,x\n", HEADER, "row 3: val_bpb must be a number, but got 'x'"),
        ("a,10,1,h,1.0\nb,-5,1,h,1.0\n", HEADER, "row 3: budget_seconds must be a positive"),
        ("a,10,a b,h,1.0\n", HEADER, "row 2: seed expected 1 to 64 ASCII characters"),
        ("a,10,1,,1.0\n", HEADER, "row 2: host is empty"),
        ("a,10,1,h,1.0\na,10,1,h,1.1\n", HEADER, "row 3: duplicate of row 2"),
        ("a,10,1,h,1.0\nb,10,1,h,inf\n", HEADER, "row 3: val_bpb must be a positive, finite"),
        (
            "a,10,1,h,1.0\nb,20,1,h,1.0\n",
            HEADER,
            "budget_seconds=10 has no usable cell (no value for b)",
        ),
        ("a,10,1,h,1.0\n", HEADER, "1 condition(s); a back-test needs at least 2"),
    ],
)
def test_bad_tables_are_refused_with_the_row(
    tmp_path: Path, body: str, header: str, message: str
) -> None:
    with pytest.raises(CurvesError) as info:
        read_curves(write(tmp_path, body, header))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_round_trip_csv_and_parquet(tmp_path: Path) -> None:
    rows = synthetic_rows(
        SyntheticSpec(conditions=3, budgets=(10.0, 20.0), seeds=(1, 2), hosts=("x",))
    )
    for name in ("t.csv", "t.parquet"):
        back = read_curves(write_curves(rows, tmp_path / name))
        assert back.conditions == ("syn00", "syn01", "syn02")
        assert back.budgets == (10.0, 20.0) and back.seeds == (1, 2) and back.hosts == ("x",)
        original = build_table(rows, "mem")
        assert np.allclose(back.final.values, original.final.values)
        assert back.truth() == original.truth()


def test_incomplete_cells_are_left_out_of_a_level(tmp_path: Path) -> None:
    body = "a,10,1,h,1.0\nb,10,1,h,1.2\na,10,2,h,1.1\na,20,1,h,0.9\nb,20,1,h,0.8\n"
    table = read_curves(write(tmp_path, body))
    assert [lv.n_cells for lv in table.levels] == [1, 1]  # seed 2 lacks b at 10 s
    assert table.conditions[table.truth()] == "b"


def test_synthetic_flip_controls_how_early_ranks_relate_to_final() -> None:
    def early_final_corr(flip: float) -> float:
        spec = SyntheticSpec(conditions=10, flip=flip, seed_noise=0.0, host_noise=0.0)
        table = build_table(synthetic_rows(spec), "syn")
        early = table.levels[0].values[:, 0, 0]
        final = table.final.values[:, 0, 0]
        return float(
            np.corrcoef(np.argsort(np.argsort(early)), np.argsort(np.argsort(final)))[0, 1]
        )

    assert early_final_corr(0.0) > 0.8
    assert early_final_corr(1.0) < -0.8
    with pytest.raises(CurvesError, match=r"flip must be a number in \[0, 1\], but got 2"):
        SyntheticSpec(flip=2)


def test_draws_use_distinct_seeds_across_levels_and_are_deterministic() -> None:
    rows = synthetic_rows(
        SyntheticSpec(
            conditions=3, budgets=(1.0, 2.0, 4.0, 8.0, 16.0), seeds=(1, 2, 3, 4), hosts=("h",)
        )
    )
    table = build_table(rows, "syn")
    assert default_cells(table) == (1, 1, 1, 1, 4)
    d = draw(table, 200, seed=5)
    early = np.stack([lv.seeds[:, 0] for lv in d.levels[:4]], axis=1)
    assert all(len(set(row)) == 4 for row in early.tolist())  # four levels, four seeds
    assert len({tuple(r) for r in early.tolist()}) > 10  # and the order varies by replay
    again = draw(table, 200, seed=5)
    assert all(
        np.array_equal(a.values, b.values) for a, b in zip(d.levels, again.levels, strict=True)
    )
    other = draw(table, 200, seed=6)
    assert not np.array_equal(d.levels[0].seeds, other.levels[0].seeds)


def test_one_cell_per_host_goes_round_robin_over_hosts() -> None:
    rows = synthetic_rows(
        SyntheticSpec(conditions=2, budgets=(1.0, 2.0), seeds=(1, 2, 3), hosts=("p", "q"))
    )
    table = build_table(rows, "syn")
    d = draw(table, 100, parse_cells("2,3", table), seed=0)
    assert (np.sort(d.levels[0].hosts, axis=1) == [0, 1]).all()  # one seed on each host
    counts = np.stack([(d.levels[1].hosts == h).sum(axis=1) for h in (0, 1)], axis=1)
    assert set(map(tuple, counts.tolist())) == {(2, 1), (1, 2)}
    with pytest.raises(
        CurvesError, match=r"level 2s has 6 usable cell\(s\); expected 1..6, but got 7"
    ):
        parse_cells("2,7", table)
    with pytest.raises(CurvesError, match=r"1 value\(s\) for 2 budget levels"):
        parse_cells("2", table)


def test_rows_keep_optional_columns(tmp_path: Path) -> None:
    rows = [
        CurveRow("a", 10.0, 1, "h", 1.0, training_seconds=9.5, label="A", role="reference"),
        CurveRow("b", 10.0, 1, "h", 1.1),
    ]
    path = write_curves(rows, tmp_path / "o.csv")
    assert (
        path.read_text().splitlines()[0]
        == "condition_id,budget_seconds,seed,host,val_bpb,training_seconds,label,role"
    )
    back = read_curves(path).rows
    assert back[0].label == "A" and back[0].training_seconds == 9.5 and back[1].role is None
