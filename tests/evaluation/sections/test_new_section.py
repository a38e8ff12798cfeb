"""A new report section is one new file and one config entry: it shows up in results.json and report.html."""

from __future__ import annotations

import json
import textwrap
from html.parser import HTMLParser

from evaluation import evaluate
from ssl_pretrain.config import compose_config

SECTION = '''
"""A contributor's section: how many runs of each kind the evaluation read."""

from matplotlib.figure import Figure

from evaluation.figures import figure_png
from evaluation.report_html import e, table
from evaluation.sections.base import Section

KINDS = ("pretrain", "finetune", "predict")


class RunCount(Section):
    id = "run_count"
    title = "Runs of each kind"
    captions = {"run_count": "Runs of each kind the evaluation read."}

    def compute(self, ctx):
        kinds = [r.kind for r in ctx.runs]
        return {"run_count": {k: kinds.count(k) for k in KINDS}, "run_count_kinds": list(KINDS)}

    def draw(self, results):
        fig = Figure(figsize=(2, 2))
        fig.subplots().bar(list(results["run_count"]), list(results["run_count"].values()))
        return {"run_count": figure_png(fig)}

    def provenance(self, family, results):
        return f"{len(results['config']['runs'])} run directories"

    def render(self, results, figures):
        rows = ([e(k), e(v)] for k, v in results["run_count"].items())
        return table(["kind", "runs"], rows) + figures
'''


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.nav: list[str] = []
        self._in_nav = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.ids.append(a["id"])
        self._in_nav = self._in_nav or tag == "nav"
        if self._in_nav and tag == "a":
            self.nav.append(a["href"])

    def handle_endtag(self, tag):
        self._in_nav = self._in_nav and tag != "nav"


def test_a_section_from_one_file_and_one_config_entry_reaches_results_and_report(tmp_path, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "run_count_section.py").write_text(textwrap.dedent(SECTION))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    base = [f"data.root={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.runs_dir={tmp_path}"]
    cfg = compose_config("evaluate", [*base, "baselines.methods=[]"], output_dir=tmp_path / "eval")
    cfg.report.sections.append({"_target_": "run_count_section.RunCount"})

    out = evaluate.run(cfg)

    results = json.loads((out / "results.json").read_text())
    assert results["run_count"] == {"pretrain": 0, "finetune": 0, "predict": 0}
    assert results["run_count_kinds"] == ["pretrain", "finetune", "predict"]
    html = (out / "report.html").read_text()
    parser = _Sections()
    parser.feed(html)
    assert parser.ids[-2:] == ["reading-notes", "run-count"]  # the listed order
    assert parser.nav == [f"#{i}" for i in parser.ids]  # one nav entry per section, same order
    assert '<section id="run-count"><h2>Runs of each kind</h2>' in html and ">Runs of each kind</a>" in html
    assert "<td>finetune</td><td>0</td>" in html
    assert 'id="fig-run_count"' in html
    assert "Runs of each kind the evaluation read. Made from: 0 run directories." in html
