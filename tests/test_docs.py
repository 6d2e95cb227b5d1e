"""The README's config reference and variable table are generated from the code."""

from conftest import ROOT
from stress.config import reference_markdown
from stress.runner.variables import PATH_METRICS, variables_markdown


def test_readme_config_reference_is_current():
    readme = (ROOT / "README.md").read_text()
    assert reference_markdown() in readme, (
        "README config reference is stale: regenerate it with stress.config.reference_markdown()")


def test_readme_lists_every_output_variable():
    readme = (ROOT / "README.md").read_text()
    assert variables_markdown() in readme
    for v in PATH_METRICS:
        assert f"| `{v.name}` | {v.units} | {v.long_name} |" in readme


def test_readme_shows_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make run" in first_block and "make test" in first_block
