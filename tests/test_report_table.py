"""One Table rendered to Markdown, HTML and CSV from the same cells; one interval format."""
from deepmammo.report.table import Table, interval, number


def _table():
    table = Table("Ensembles & fusion", ("Name", "n", "Accuracy", "Notes"),
                  notes="(past the paper; <test> set)")
    table.add("levynet", "32", interval(0.78125, [0.632, 0.9296]), "")
    table.add("↳", None, interval(None, [0.1, 0.2]), "a, \"quoted\" note")
    return table


def test_markdown_has_the_title_line_blank_cells_and_empty_cells():
    assert _table().markdown() == (
        "**Ensembles & fusion** (past the paper; <test> set)\n"
        "\n"
        "| Name | n | Accuracy | Notes |\n"
        "|---|---|---|---|\n"
        "| levynet | 32 | 0.781 [0.632, 0.930] |  |\n"
        "| ↳ | | - | a, \"quoted\" note |\n")
    assert _table().markdown(title=False).startswith("| Name | n |")


def test_html_escapes_every_cell_under_the_title_paragraph():
    assert _table().html() == (
        "<p><strong>Ensembles &amp; fusion</strong> (past the paper; &lt;test&gt; set)</p>\n"
        "<table><tr><th>Name</th><th>n</th><th>Accuracy</th><th>Notes</th></tr>\n"
        "<tr><td>levynet</td><td>32</td><td>0.781 [0.632, 0.930]</td><td></td></tr>\n"
        "<tr><td>↳</td><td></td><td>-</td><td>a, &quot;quoted&quot; note</td></tr>\n"
        "</table>")
    assert _table().html(title=False).startswith("<table><tr><th>Name</th>")
    assert Table(columns=("a",)).html_title() == ""


def test_csv_is_the_columns_and_cells_quoted_where_needed():
    table = Table(columns=("model", "accuracy", "seeds"))
    table.add("LevyNet, aug", 0.781, None)
    table.add("AlexNet", "", "s1;s2")
    assert table.csv() == ('model,accuracy,seeds\n"LevyNet, aug",0.781,\nAlexNet,,s1;s2\n')


def test_interval_and_number():
    assert number(None) == "-" and number(0.5) == "0.500" and number(1.23456, 2) == "1.23"
    assert interval(0.5, None) == "0.500"
    assert interval(-0.01, [-0.1234, 0.05]) == "-0.010 [-0.123, 0.050]"
    assert interval(30.0, (29.0, 31.0), fmt=lambda v: "%d" % v) == "30 [29, 31]"
