"""A table as data (title, notes, columns, rows of cells), rendered from the same cells to
Markdown (tables/*.md and the terminal), HTML (the report page) and CSV; and the one way a
number and its interval are written ("0.812 [0.654, 0.958]").

Markdown: a line "**title** notes", a blank line, then "| a | b |" rows under a "|---|" rule.
A cell None is blank ("| |": continuation and placeholder rows); any other cell shows as
str(cell), so "" is an empty cell of its own ("|  |"). The HTML is that table as a <table> under
its title paragraph; the CSV is the columns and the cells as they are (title and notes left out).
"""
import csv
import dataclasses
import io

from deepmammo.report.html import esc


def number(value, digits=3):
    """A metric as tables write it: fixed digits, '-' for None."""
    return "-" if value is None else "%.*f" % (digits, value)


def interval(value, ci, fmt=number):
    """'value [low, high]', or 'value' without an interval, or '-' without a value (a metric
    undefined on the records has no interval either)."""
    if value is None:
        return "-"
    text = fmt(value)
    return text + " [%s, %s]" % (fmt(ci[0]), fmt(ci[1])) if ci else text


def _markdown_row(cells):
    return "|" + "|".join(" " if c is None else " %s " % (c,) for c in cells) + "|"


@dataclasses.dataclass
class Table:
    """title: shown bold; notes: what follows it on its line (split, rules, caveats)."""
    title: str = None
    columns: tuple = ()
    rows: list = dataclasses.field(default_factory=list)
    notes: str = ""

    def add(self, *cells):
        self.rows.append(cells)

    def markdown(self, title=True):
        """The Markdown text; title=False leaves the title line out."""
        lines = ["**%s**%s" % (self.title, " " + self.notes if self.notes else ""), ""] \
            if title and self.title else []
        lines += [_markdown_row(self.columns), "|" + "---|" * len(self.columns)]
        lines += [_markdown_row(row) for row in self.rows]
        return "\n".join(lines) + "\n"

    def html_title(self):
        """The title line as an HTML paragraph ('' without a title)."""
        if not self.title:
            return ""
        return "<p><strong>%s</strong>%s</p>" % (esc(self.title),
                                                 esc(" " + self.notes if self.notes else ""))

    def html(self, title=True):
        """The table as HTML, under its title paragraph unless title=False."""
        out = [self.html_title()] if title and self.title else []
        out.append("<table><tr>%s</tr>" % "".join("<th>%s</th>" % esc(c) for c in self.columns))
        for row in self.rows:
            out.append("<tr>%s</tr>" % "".join(
                "<td>%s</td>" % esc("" if c is None else str(c).strip()) for c in row))
        out.append("</table>")
        return "\n".join(out)

    def csv(self):
        """The columns and every row's cells as CSV (None: an empty field)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return buf.getvalue()
