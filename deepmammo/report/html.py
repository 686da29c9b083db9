"""The report page: one self-contained index.html (no network: inline CSS, figures by relative
path inside the report folder) with the tables, the figures and the provenance of every number.

A few lines of inline script mark each figure as loaded or broken once the page has loaded
(`data-loaded` on every <img>, a summary on <body>), so a reader sees a missing file at once and
a headless browser can check the page.
"""
import html
import json

import yaml

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #bbb; padding: 3px 7px; text-align: left; }
th { background: #eee; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #444; }
.broken { outline: 3px solid red; }
.note { font-size: 13px; color: #666; }
pre { background: #f6f6f6; padding: 6px; font-size: 12px; overflow-x: auto; }
"""

CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img'), ok = 0;
  imgs.forEach(function (img) {
    var loaded = img.complete && img.naturalWidth > 0;
    img.setAttribute('data-loaded', loaded ? 'true' : 'false');
    if (loaded) { ok += 1; } else { img.classList.add('broken'); }
  });
  document.body.setAttribute('data-figures', ok + '/' + imgs.length);
});
"""


def esc(text):
    return html.escape("" if text is None else str(text))


def figure_html(src, caption, pdf=None):
    link = ' (<a href="%s">PDF</a>)' % esc(pdf) if pdf else ""
    return ('<figure><img src="%s" alt="%s"><figcaption>%s%s</figcaption></figure>'
            % (esc(src), esc(caption), esc(caption), link))


def provenance_html(entries):
    """entries: [{title, facts: {name: value}, config: dict or None}]."""
    out = []
    for entry in entries:
        out.append("<h3>%s</h3><table>" % esc(entry["title"]))
        for name, value in entry["facts"].items():
            if isinstance(value, (dict, list)):
                value = json.dumps(value, sort_keys=True)
            out.append("<tr><th>%s</th><td>%s</td></tr>" % (esc(name), esc(value)))
        out.append("</table>")
        if entry.get("config"):
            out.append("<details><summary>resolved config</summary><pre>%s</pre></details>"
                       % esc(yaml.safe_dump(entry["config"], sort_keys=False)))
    return "\n".join(out)


def render(title, sections):
    """The page. sections: [(heading, html body)] in order."""
    body = ["<h1>%s</h1>" % esc(title)]
    toc = "".join('<li><a href="#s%d">%s</a></li>' % (i, esc(h)) for i, (h, _) in
                  enumerate(sections))
    body.append("<ul>%s</ul>" % toc)
    for i, (heading, content) in enumerate(sections):
        body.append('<h2 id="s%d">%s</h2>\n%s' % (i, esc(heading), content))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>%s</title><style>%s</style></head>\n<body>\n%s\n<script>%s</script>\n"
            "</body></html>\n" % (esc(title), STYLE, "\n".join(body), CHECK_SCRIPT))
