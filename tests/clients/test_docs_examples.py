"""Every Python example in docs/CLIENTS.md runs, against the fake server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "CLIENTS.md"
EXAMPLES = re.findall(r"```python\n(.+?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_example_runs(fake_server, index, capsys):
    code = EXAMPLES[index].replace("localhost:50051", fake_server.target)
    exec(compile(code, f"{DOC.name} example {index + 1}", "exec"), {"__name__": "doc_example"})
    assert fake_server.behaviour.calls, "the example made no call"
