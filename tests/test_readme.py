"""The README's Guarantees name tests: each must exist, so no guarantee is backed by nothing."""

from __future__ import annotations

import re

from conftest import REPO


def test_every_guarantee_names_an_existing_test():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", section)
    assert len(named) >= 15
    for module, test in named:
        source = (REPO / "tests" / module).read_text()
        assert re.search(rf"^def {test}\(", source, re.M), f"{module}::{test} is not a test"
