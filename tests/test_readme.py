"""The README's Python examples are the code these tests run (extracted from README.md)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def readme_block(marker: str) -> str:
    """The ```python block of README.md whose first line is `# example: <marker>`."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    found = [b for b in blocks if b.startswith(f"# example: {marker}\n")]
    assert len(found) == 1, f"README.md should hold exactly one block marked '# example: {marker}'"
    return found[0]


def test_the_custom_environment_example_learns_with_a2c_and_a_learned_rule(monkeypatch, capsys):
    """Both learners reach the far end of the corridor (return 1; the uniform policy scores ~0.4)."""
    monkeypatch.chdir(ROOT)  # the example loads the committed rule by a path relative to the repository
    exec(compile(readme_block("custom-environment"), "README.md", "exec"), {"__name__": "readme_example"})
    finals = {}
    for line in capsys.readouterr().out.splitlines():
        name, _, values = line.partition(" final return per seed: ")
        finals[name] = np.array([float(v) for v in values.strip("[] ").split()])
    assert set(finals) == {"A2C", "LPG"}
    for name, values in finals.items():
        assert values.shape == (2,) and values.min() > 0.9, (name, values)
