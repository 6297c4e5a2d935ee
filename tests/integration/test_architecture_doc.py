"""docs/ARCHITECTURE.md stays true: every file it names exists, and every file:function it
names is defined in that file (a function moved or renamed fails here until the page
follows). No broker needed."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "ARCHITECTURE.md")
PATH = r"(?:common|worker|producer|tools)/[A-Za-z0-9_/.-]+\.[ch]"


def doc():
    with open(DOC) as f:
        return f.read()


def defined(path, func):
    """Whether path defines func: a line starting a definition, not a call or a comment."""
    with open(os.path.join(ROOT, path)) as f:
        text = f.read()
    return re.search(r"^[A-Za-z].*\b" + re.escape(func) + r"\(", text, re.M) is not None


def test_every_named_file_exists():
    paths = set(re.findall(r"`(" + PATH + r")(?::\w+)?`", doc()))
    assert len(paths) >= 20, paths
    missing = sorted(p for p in paths if not os.path.isfile(os.path.join(ROOT, p)))
    assert not missing, f"ARCHITECTURE.md names files that do not exist: {missing}"


def test_every_named_function_is_defined_where_it_says():
    pairs = set(re.findall(r"(" + PATH + r"):(\w+)", doc()))
    assert len(pairs) >= 30, pairs
    wrong = sorted(f"{p}:{fn}" for p, fn in pairs
                   if not os.path.isfile(os.path.join(ROOT, p)) or not defined(p, fn))
    assert not wrong, f"ARCHITECTURE.md names functions not defined there: {wrong}"


def test_every_worker_folder_is_described():
    text = doc()
    folders = sorted(d for d in os.listdir(os.path.join(ROOT, "worker"))
                     if os.path.isdir(os.path.join(ROOT, "worker", d)))
    assert folders, "no worker folders"
    missing = [d for d in folders if f"`worker/{d}/`" not in text]
    assert not missing, f"worker folders ARCHITECTURE.md does not describe: {missing}"
