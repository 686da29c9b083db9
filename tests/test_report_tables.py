"""Tables 1-3: each row the snapshot chosen on validation, beside the paper's figure."""
import csv
import os

import pytest
from worlds import build_world, evaluate_world

from deepmammo.report.collect import collect_runs
from deepmammo.report.paper import TABLE2
from deepmammo.report.tables import table_rows, to_markdown, write_table


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = build_world(str(tmp_path_factory.mktemp("tables_world")))
    w["results"] = evaluate_world(w, n_boot=50)
    return w


def test_table2_reports_test_metrics_of_the_snapshot_chosen_on_validation(world, tmp_path):
    runs = collect_runs(os.path.join(world["root"], "runs"))
    assert sorted(runs) == ["googlenet-deeper", "levynet"]
    table, rows = write_table("table2", runs, str(tmp_path))
    markdown = table.markdown()
    by_exp = {r["experiment"]: r for r in rows}
    for experiment, (_, test) in world["results"].items():
        chosen = test["selected"]["snapshot"]
        entry = next(e for e in test["snapshots"] if e["snapshot"].endswith(chosen))
        row = by_exp[experiment]
        assert row["snapshot"] == chosen
        assert row["accuracy"] == entry["metrics"]["accuracy"]
        assert row["recall"] == entry["metrics"]["recall"]
        assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]
        assert row["epochs"] == pytest.approx(entry["epoch"])
    assert by_exp["levynet"]["accuracy_paper"] == 0.604
    assert by_exp["alexnet-aug-large"]["status"] == "not run"
    assert "| GoogLeNet (Aug - Large Context) - Deeper Training | " in markdown
    assert "0.929" in markdown and "not run" in markdown
    with open(tmp_path / "table2.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["experiment"] for r in csv_rows] == [r["experiment"] for r in TABLE2["rows"]]
    assert float(csv_rows[0]["accuracy"]) == pytest.approx(by_exp["levynet"]["accuracy"])


def test_tables_1_and_3_use_validation(world, tmp_path):
    runs = collect_runs(os.path.join(world["root"], "runs"))
    _, rows = write_table("table3", runs, str(tmp_path))
    val = world["results"]["levynet"][0]
    chosen = max(val["snapshots"], key=lambda e: (e["metrics"]["accuracy"],
                                                  e["metrics"]["recall"], -e["iteration"]))
    assert rows[0]["precision"] == chosen["metrics"]["precision"]
    _, rows = write_table("table1", runs, str(tmp_path))
    assert [r["status"] for r in rows] == ["not run", "not run"]
    assert os.path.isfile(tmp_path / "table1.md")
    with pytest.raises(ValueError, match="unknown table"):
        write_table("table9", runs, str(tmp_path))


def test_newest_run_is_reported_and_latest_link_is_not_a_run(world, tmp_path):
    import shutil
    exp = tmp_path / "runs" / "levynet"
    shutil.copytree(world["runs"]["levynet"], str(exp / "20261125-230000"))  # older, no eval
    shutil.rmtree(str(exp / "20261125-230000" / "eval"))
    shutil.copytree(world["runs"]["levynet"], str(exp / "20261126-013000"))
    os.symlink("20261125-230000", str(exp / "latest"))
    runs = collect_runs(str(tmp_path / "runs"))
    assert runs["levynet"].run_dir == str(exp / "20261126-013000")


def test_run_override_and_missing_runs_folder(world, tmp_path):
    run = world["runs"]["levynet"]
    runs = collect_runs(None, {"alexnet-aug-large": run})
    rows = table_rows(TABLE2, runs)
    assert rows[1]["status"] == "ok" and rows[0]["status"] == "not run"
    assert "levynet_iter" in to_markdown(TABLE2, rows)
    with pytest.raises(FileNotFoundError, match="runs folder not found"):
        collect_runs(str(tmp_path / "nope"))


def test_table2_at_the_validation_threshold(world, tmp_path):
    runs = collect_runs(os.path.join(world["root"], "runs"))
    table, rows = write_table("table2", runs, str(tmp_path), decision="val-threshold")
    markdown = table.markdown()
    test = world["results"]["levynet"][1]
    chosen = next(e for e in test["snapshots"]
                  if e["snapshot"].endswith(test["selected"]["snapshot"]))
    assert rows[0]["accuracy"] == chosen["threshold_metrics"]["metrics"]["accuracy"]
    assert "threshold fitted on validation" in markdown
    _, val_rows = write_table("table3", runs, str(tmp_path), decision="val-threshold")
    assert val_rows[0]["decision"] == "argmax"


def test_alias_fills_a_paper_row_with_a_run_of_another_name(world, tmp_path, capsys):
    from deepmammo.cli import main
    root = os.path.join(world["root"], "runs")
    runs = collect_runs(root, aliases={"googlenet-deeper": "googlenet-shallow"})
    rows = table_rows(TABLE2, runs)
    assert [r["status"] for r in rows] == ["ok", "not run", "ok", "not run"]
    assert rows[2]["model"].endswith("[run: googlenet-deeper]")
    with pytest.raises(ValueError, match="no evaluated run of demo-x"):
        collect_runs(root, aliases={"demo-x": "levynet"})
    assert main(["tables", "--runs", root, "--out", str(tmp_path), "--table", "table2",
                 "--alias", "googlenet-deeper=googlenet-shallow"]) == 0
    assert "googlenet-deeper_iter_" in capsys.readouterr().out
