"""docs/tour.md runs: its Python blocks, top to bottom in one namespace, as a reader would type them."""

import re
from pathlib import Path

TOUR = Path(__file__).resolve().parent.parent / "docs" / "tour.md"


def test_every_snippet_of_the_tour_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", TOUR.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 5, "the tour's five steps"
    namespace = {"__name__": "tour"}
    for i, code in enumerate(blocks, 1):
        exec(compile(code, f"{TOUR}:block {i}", "exec"), namespace)  # noqa: S102 - the project's own documentation
    printed = capsys.readouterr().out
    assert "after 100 steps on one batch" in printed and "decoded" in printed
