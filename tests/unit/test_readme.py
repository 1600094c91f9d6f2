from pathlib import Path

from components.common.settings import ENV_VARS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_documents_every_environment_variable():
    text = README.read_text()
    missing = [var for var in ENV_VARS if f"`{var}`" not in text]
    assert not missing, f"README configuration table lacks {missing}"


def test_readme_quickstart_has_the_two_commands():
    text = README.read_text()
    assert "make pipeline-run" in text and "make test" in text
