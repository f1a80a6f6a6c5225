"""CI runs the README's test command; the README holds exactly two set-up commands."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_ci_extracts_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    awk = re.search(r"cmd=\$\((awk .*README\.md)\)", script).group(1)
    extracted = subprocess.run(awk, shell=True, cwd=ROOT, capture_output=True, text=True).stdout
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)
    assert len(commands) == 2
    assert extracted.strip() == commands[0].strip()
    assert "pip install torch==2.13.0" in commands[0] and commands[0].rstrip().endswith("pytest")
    assert "evip run" in commands[1]
