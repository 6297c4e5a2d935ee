"""aiqtest is the one helper module: no test, suite or benchmark script imports helpers from
a test file or from conftest.py (which pytest alone loads, for its fixtures). Importing a
test file for a helper couples the two files and hides where the helper lives."""
import glob
import os
import re

from aiqtest import ROOT, percentile, rfc3339

# `from test_x import ...`, `import test_x`, `from conftest import ...`, `import conftest`
BAD_IMPORT = re.compile(
    r"^\s*(?:from\s+(?:test_\w+|conftest)\s+import|import\s+(?:test_\w+|conftest)\b)", re.M)


def python_files():
    for pattern in ("tests/integration/*.py", "tests/system/*.py", "bench/*.py"):
        yield from glob.glob(os.path.join(ROOT, pattern))


def test_helpers_come_from_aiqtest_only():
    files = list(python_files())
    assert any(f.endswith("test_consumer_core.py") for f in files)  # the globs found them
    bad = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for m in BAD_IMPORT.finditer(f.read()):
                bad.append(f"{os.path.relpath(path, ROOT)}: {m.group(0).strip()}")
    assert not bad, "import helpers from aiqtest instead:\n" + "\n".join(bad)


def test_pure_helpers():
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1700000000.1234) == "2023-11-14T22:13:20.123Z"
    assert percentile([5, 1, 4, 2, 3], 0.5) == 3
    assert percentile([5, 1, 4, 2, 3], 0.99) == 5
    assert percentile([], 0.5) is None
