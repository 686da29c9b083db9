"""The sections of the report page, in order. Each is a function of the report's Context
registered once in SECTIONS under its heading: it writes its files (tables/, figures/,
beyond/, model-cards/), records its numbers in ctx.data (report.json) and returns its HTML, or
None to leave the section out.
"""
import os

from deepmammo.atomic import write_text
from deepmammo.report import claims, html, paper, tables
from deepmammo.report.calibration import calibration_figure, calibration_table
from deepmammo.report.collect import ordered
from deepmammo.report.external import external_table
from deepmammo.report.extras import EXTRAS
from deepmammo.report.run_figures import draw_figures

SECTIONS = []  # (heading, function), in the page's order


def section(heading):
    """Register a section function under its heading."""
    def register(fn):
        SECTIONS.append((heading, fn))
        return fn
    return register


def _figure_html(ctx, fig):
    """A figure on the page; its PNG is listed in report.json."""
    ctx.data.setdefault("figures", []).append(os.path.relpath(fig.png, ctx.out_dir))
    return html.figure_html(os.path.relpath(fig.png, ctx.out_dir), fig.caption,
                            os.path.relpath(fig.pdf, ctx.out_dir) if fig.pdf else None)


@section("Tables (ours beside the paper's)")
def paper_tables(ctx):
    table_dir = ctx.path("tables")
    parts = []
    for name in paper.TABLES:
        table, rows = tables.write_table(name, ctx.runs, table_dir)
        ctx.data["tables"][name] = rows
        parts.append(table.html() + '<p class="note">Also as <a href="tables/%s.md">Markdown'
                     '</a> and <a href="tables/%s.csv">CSV</a>.</p>' % (name, name))
    table, rows = tables.runs_table(ctx.runs)
    write_text(os.path.join(table_dir, "runs.md"), table.markdown(title=False))
    ctx.data["runs"] = rows
    # runs.md has no title line; the page shows it right above the table
    parts.append(table.html_title() + table.html(title=False))
    return "\n".join(parts)


@section("Paired comparisons (past the paper)")
def paired_comparisons(ctx):
    table, rows = claims.write_claims(ctx.runs, ctx.path("tables"), ctx.compare_pairs,
                                      ctx.n_boot, ctx.seed)
    ctx.data["claims"] = rows
    return (table.html() + '<p class="note">Also as <a href="tables/claims.md">Markdown</a>, '
            '<a href="tables/claims.csv">CSV</a> and '
            '<a href="tables/claims.json">JSON</a>.</p>')


@section("Figures")
def paper_figures(ctx):
    notes = []
    made = draw_figures(ctx, notes)
    ctx.data["figures"] = []
    parts = [_figure_html(ctx, f) for f in made]
    if notes:
        parts.append('<p class="note">%s</p>' % "<br>".join(html.esc(n) for n in notes))
    ctx.data["figure_notes"] = notes
    return "\n".join(parts)


@section("Calibration (past the paper)")
def calibration(ctx):
    table, rows = calibration_table(ctx.runs)
    write_text(ctx.path("tables", "calibration.md"), table.markdown())
    ctx.data["calibration"] = rows
    parts = [table.html()]
    fig = calibration_figure(ctx.runs, ctx.figure_dir)
    if fig:
        parts.append(_figure_html(ctx, fig))
    return "\n".join(parts)


@section("External validation (past the paper)")
def external_validation(ctx):
    table, rows = external_table(ctx.runs)
    write_text(ctx.path("tables", "external.md"), table.markdown())
    ctx.data["external"] = rows
    return table.html()


@section("Past the paper (not part of the paper's tables)")
def past_the_paper(ctx):
    """The analyses asked for by name (EXTRAS), in their registered order."""
    parts = []
    for name, fn in EXTRAS.items():
        if name not in ctx.extras:
            continue
        analysis = fn(ctx)
        if analysis.table is not None:
            write_text(ctx.path("beyond", name + ".md"), analysis.table.markdown())
            parts.append(analysis.table.html())
            ctx.data["beyond"][name] = analysis.rows
        parts += [_figure_html(ctx, f) for f in analysis.figures]
    return "\n".join(parts) if parts else None


@section("Model cards (data, training, metrics, limits of each run)")
def model_cards(ctx):
    """Each run's model card (report/model_card.py) under model-cards/."""
    from deepmammo.report.model_card import card_facts, render
    parts = []
    for experiment, member in ((e, m) for e, run in sorted(ctx.runs.items())
                               for m in run.repeats):
        facts = card_facts(member.run_dir)
        ctx.origins.append({"synthetic": facts["data"]["synthetic"]})
        name = "%s-%s.md" % (experiment, os.path.basename(member.run_dir.rstrip("/")))
        text = render(facts)
        write_text(ctx.path("model-cards", name), text)
        parts.append('<details><summary>%s</summary><pre>%s</pre><p class="note">Also as '
                     '<a href="model-cards/%s">Markdown</a>.</p></details>'
                     % (html.esc(experiment + " (" + member.run_dir + ")"), html.esc(text),
                        html.esc(name)))
    return "\n".join(parts) or "<p>No runs.</p>"


def provenance_entries(runs):
    """What each run's numbers came from: its folder, commits, engines, data hashes, and the
    snapshot validation chose."""
    entries = []
    for r in ordered(runs):
        facts = {"run folder": r.run_dir, "experiment": r.experiment,
                 "seed": r.info.get("seed"), "from scratch": r.from_scratch}
        prov = r.info.get("provenance") or {}
        facts["training commit"] = prov.get("git_commit")
        for split, results in (("validation", r.val), ("test", r.test)):
            if not results:
                continue
            p = results.provenance
            facts["%s results" % split] = results.path
            facts["%s engine" % split] = "%s (tta %s)" % (results.engine, results.tta)
            facts["%s eval commit" % split] = p.get("git_commit")
            facts["%s data hashes (sha1)" % split] = {
                os.path.basename(k.rstrip("/")): v for k, v in (p.get("inputs") or {}).items()
                if not k.endswith(".caffemodel")}
        chosen = r.chosen_val()
        if chosen:
            facts["snapshot chosen on validation"] = "%s (by %s)" \
                % (chosen.name, ", then ".join(r.criteria))
        entries.append({"title": r.experiment, "facts": facts, "config": r.info.get("config")})
    return entries


@section("Provenance of every number")
def provenance(ctx):
    from deepmammo.provenance import provenance as make_provenance
    prov = make_provenance(config={"runs": ctx.runs_root, "extras": sorted(ctx.extras),
                                   "engine": ctx.engine}, seed=ctx.seed)
    entries = provenance_entries(ctx.runs)
    entries.append({"title": "this report", "facts": {k: prov[k] for k in
                                                      ("created", "git_commit", "command")}})
    ctx.data["provenance"] = prov
    return html.provenance_html(entries)
