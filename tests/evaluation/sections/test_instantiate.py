"""Report sections come from ``report.sections``: names of configs/report/section/*.yaml or inline ``_target_``s."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from evaluation.sections.base import Section
from evaluation.sections.instantiate import SECTION_DIR, computation_order, default_sections, instantiate_sections
from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.errors import ConfigError


def test_the_default_sections_are_the_config_folder_in_the_listed_order():
    sections = default_sections()
    assert {s.id for s in sections} == {p.stem for p in SECTION_DIR.glob("*.yaml")}
    assert [s.html_id for s in sections][:5] == [
        "best-per-k",
        "design",
        "convergence",
        "budget-check",
        "learning-curves",
    ]
    assert all(isinstance(s, Section) and s.title for s in sections)
    order = [s.id for s in computation_order(sections)]
    assert order.index("best_per_k") > max(order.index(r) for r in ("learning_curves", "comparisons", "compute"))


def test_an_inline_target_is_instantiated_like_a_name():
    by_name = instantiate_sections(["design"])
    inline = instantiate_sections([{"_target_": "evaluation.sections.design.Design"}])
    assert type(by_name[0]) is type(inline[0])


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["no_such_section"], "no section named 'no_such_section'"),
        (["design", "design"], "share the id"),
        (["best_per_k", "learning_curves"], "reads the results of ['comparisons', 'compute']"),
        ([{"_target_": "collections.OrderedDict"}], "not an evaluation Section"),
        ([3], "a section name or a config with a _target_"),
    ],
)
def test_a_bad_section_list_names_the_problem(entries, message):
    with pytest.raises(ConfigError, match=r"report\.sections") as err:
        instantiate_sections(entries)
    assert message in str(err.value)


def test_each_section_title_is_its_heading_and_its_nav_label():
    from evaluation.report import render_html

    html = render_html({}, {})
    for s in default_sections():
        assert f'<a href="#{s.html_id}">{s.title}</a>' in html
        assert f'<section id="{s.html_id}"><h2>{s.title}</h2>' in html


def test_a_named_section_is_found_in_a_labs_searchpath_folder(tmp_path):
    """``bssl evaluate hydra.searchpath=[file://DIR]`` with ``DIR/report/section/<name>.yaml`` names it like a
    packaged section (the folder holds only the config; its class may live anywhere importable)."""
    (tmp_path / "report" / "section").mkdir(parents=True)
    (tmp_path / "report" / "section" / "design_again.yaml").write_text("_target_: evaluation.sections.design.Design\n")
    with pytest.raises(ConfigError, match="no section named 'design_again'"):
        instantiate_sections(["design_again"])  # not searched outside that app
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        searchpath = f"hydra.searchpath=[file://{tmp_path}]"
        HydraConfig.instance().set_config(compose("evaluate", overrides=[searchpath], return_hydra_config=True))
        try:
            (section,) = instantiate_sections(["design_again"])
        finally:
            HydraConfig.instance().cfg = None  # type: ignore[assignment]
    assert section.id == "design"
