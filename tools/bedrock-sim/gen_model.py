#!/usr/bin/env python3
"""gen_model.py — bedrock-sim's copy of the contract: the input shapes of botocore's
`bedrock-runtime` service model, compacted for `bedrock-sim --model FILE`.

Reads the service-2.json(.gz) of the installed botocore (pinned in tests/requirements.txt),
keeps every operation's input shape and the shapes it reaches with only what a request is
judged by (type, members and their location, required, min/max, enum, pattern, union,
document), and writes one JSON document. Each pattern is kept as the model states it and,
where it can be, translated to a POSIX extended regex ("ere") that the sim compiles with
regcomp(); a pattern outside the translated subset is listed under "unenforced" instead.

    tools/bedrock-sim/gen_model.py [--out FILE]   # default: the checked-in model file
    tools/bedrock-sim/gen_model.py --check        # exit 1 when the checked-in file is stale
"""
import argparse
import gzip
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "bedrock-runtime.model.json")
REQUIREMENTS = os.path.join(HERE, "..", "..", "tests", "requirements.txt")
KEEP = ("type", "required", "min", "max", "enum", "union", "document", "payload", "member",
        "key", "value", "eventstream", "streaming")
MEMBER_KEEP = ("shape", "location", "locationName")


class Untranslatable(Exception):
    pass


def service_model_path():
    import botocore
    base = os.path.join(os.path.dirname(botocore.__file__), "data", "bedrock-runtime")
    version = sorted(os.listdir(base))[-1]
    for name in ("service-2.json", "service-2.json.gz"):
        p = os.path.join(base, version, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"no service-2.json under {base}/{version}")


def load_service_model(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


# ---- pattern translation: the ECMA-262 subset AWS models use -> POSIX ERE ------------------

SPACE = set(" \t\n\r\f\v")


def _class_escape(c):
    if c == "s":
        return ("space", None)
    if c == "d":
        return ("set", set("0123456789"))
    if c == "w":
        return ("set", set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"))
    if c == "S":
        return ("nonspace", None)
    if c in "DW":
        raise Untranslatable(f"\\{c} inside a class")
    return ("set", {c})


def _bracket(pattern, i):
    """Parses the class starting after '[' at pattern[i]; returns (ERE text, next index)."""
    negate = pattern[i] == "^"
    if negate:
        i += 1
    chars, space, nonspace, first = set(), False, False, True
    prev = None  # the last single character, a possible range start
    while i < len(pattern) and (pattern[i] != "]" or first):
        first = False
        c = pattern[i]
        if c == "\\":
            kind, val = _class_escape(pattern[i + 1])
            i += 2
            if kind == "space":
                space, prev = True, None
            elif kind == "nonspace":
                nonspace, prev = True, None
            else:
                chars |= val
                prev = next(iter(val)) if len(val) == 1 else None
            continue
        if c == "-" and prev is not None and i + 1 < len(pattern) and pattern[i + 1] != "]":
            # ECMA: a range prev-next; a '-' right after a range is literal (prev is None)
            end = pattern[i + 1]
            if end == "\\":
                end = pattern[i + 2]
                i += 1
            if ord(end) < ord(prev):
                raise Untranslatable("reversed range")
            chars |= {chr(x) for x in range(ord(prev), ord(end) + 1)}
            prev = None
            i += 2
            continue
        chars.add(c)
        prev = c
        i += 1
    if i >= len(pattern):
        raise Untranslatable("unterminated class")
    i += 1
    if space and nonspace:
        if negate:
            raise Untranslatable("empty class")
        return ".", i
    if nonspace:
        if chars or negate:
            raise Untranslatable("\\S with other members")
        return "[^[:space:]]", i
    if any(ord(c) > 126 or ord(c) < 32 and c not in SPACE for c in chars):
        raise Untranslatable("non-ASCII class member")
    return _emit_class(chars, space, negate), i


def _emit_class(chars, space, negate):
    """A canonical POSIX bracket: ']' first, '-' last, '^' never first, ranges of runs."""
    body, rest = "", sorted(c for c in chars if c not in "]-^")
    if space:
        rest = [c for c in rest if c not in SPACE]
    j = 0
    while j < len(rest):
        k = j
        while k + 1 < len(rest) and ord(rest[k + 1]) == ord(rest[k]) + 1:
            k += 1
        body += rest[j] + ("-" + rest[k] if k - j >= 2 else "".join(rest[j + 1:k + 1]))
        j = k + 1
    text = ("]" if "]" in chars else "") + body + ("[:space:]" if space else "")
    text += "^" if "^" in chars else ""
    text += "-" if "-" in chars else ""
    if not text:
        raise Untranslatable("empty class")
    if text == "^":
        text = "\\^"
        return text if not negate else "[^^]"
    return "[" + ("^" if negate else "") + text + "]"


def to_ere(pattern):
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            text, i = _bracket(pattern, i + 1)
            out.append(text)
            continue
        if c == "\\":
            e = pattern[i + 1]
            i += 2
            if e == "s":
                out.append("[[:space:]]")
            elif e == "S":
                out.append("[^[:space:]]")
            elif e == "d":
                out.append("[0-9]")
            elif e.isalnum():
                raise Untranslatable(f"escape \\{e}")
            else:
                out.append(_emit_class({e}, False, False) if e != "^" else "\\^")
            continue
        if c == "(" and pattern.startswith("(?:", i):
            out.append("(")
            i += 3
            continue
        if c == "(" and pattern.startswith("(?", i):
            raise Untranslatable("group modifier")
        if c in "*+?}" and i + 1 < len(pattern) and pattern[i + 1] in "?+":
            raise Untranslatable("lazy or possessive quantifier")
        if c == "(" and i + 1 < len(pattern) and pattern[i + 1] == ")":
            out.append("()")  # an empty alternative: glibc accepts "()"
            i += 2
            continue
        if c == "(" and i + 1 < len(pattern) and pattern[i + 1] == "|":
            out.append("(()")  # ERE has no empty branch: "(|a)" becomes "(()|a)"
            i += 1
            continue
        if c == "|" and i + 1 < len(pattern) and pattern[i + 1] in "|)":
            out.append("|()")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


# ---- the compact model ---------------------------------------------------------------------

def reachable(shapes, roots):
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        s = shapes[name]
        for m in s.get("members", {}).values():
            todo.append(m["shape"])
        for k in ("member", "key", "value"):
            if k in s:
                todo.append(s[k]["shape"])
    return seen


def compact(model, source):
    shapes = model["shapes"]
    ops = {}
    for name, op in sorted(model["operations"].items()):
        if "input" not in op:
            continue
        ops[name] = {"method": op["http"]["method"], "requestUri": op["http"]["requestUri"],
                     "input": op["input"]["shape"]}
    out_shapes, unenforced = {}, []
    for name in sorted(reachable(shapes, [o["input"] for o in ops.values()])):
        s = shapes[name]
        c = {k: s[k] for k in KEEP if k in s}
        for k in ("member", "key", "value"):
            if k in c:
                c[k] = {"shape": s[k]["shape"]}
        if "members" in s:
            c["members"] = {m: {k: v for k, v in spec.items() if k in MEMBER_KEEP}
                            for m, spec in s["members"].items()}
        if "pattern" in s:
            c["pattern"] = s["pattern"]
            try:
                c["ere"] = to_ere(s["pattern"])
            except Untranslatable as e:
                unenforced.append({"shape": name, "constraint": "pattern", "reason": str(e)})
        out_shapes[name] = c
    return {"source": source, "unenforced": unenforced, "operations": ops, "shapes": out_shapes}


def render(doc):
    # One shape per line: readable diffs when botocore is bumped.
    lines = ["{",
             f'"source": {json.dumps(doc["source"], sort_keys=True)},',
             f'"unenforced": {json.dumps(doc["unenforced"])},',
             f'"operations": {json.dumps(doc["operations"], sort_keys=True)},',
             '"shapes": {']
    items = sorted(doc["shapes"].items())
    for i, (name, s) in enumerate(items):
        sep = "," if i + 1 < len(items) else ""
        lines.append(f"{json.dumps(name)}: {json.dumps(s, sort_keys=True)}{sep}")
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


def pinned_version():
    with open(REQUIREMENTS, encoding="utf-8") as f:
        for line in f:
            if line.strip().startswith("botocore=="):
                return line.strip().split("==", 1)[1]
    return None


def build():
    import botocore
    path = service_model_path()
    model = load_service_model(path)
    source = {"botocore": botocore.__version__, "service": "bedrock-runtime",
              "apiVersion": model["metadata"]["apiVersion"]}
    return render(compact(model, source))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true",
                    help="compare with --out instead of writing it; exit 1 when it differs")
    ap.add_argument("--any-botocore", action="store_true",
                    help="use the installed botocore even when it is not the pinned version")
    args = ap.parse_args()
    import botocore
    pin = pinned_version()
    if pin and botocore.__version__ != pin and not args.any_botocore:
        print(f"installed botocore is {botocore.__version__}, tests/requirements.txt pins {pin}: "
              "install the pin (tools/bootstrap.sh) or pass --any-botocore", file=sys.stderr)
        return 2
    text = build()
    if args.check:
        try:
            with open(args.out, encoding="utf-8") as f:
                same = f.read() == text
        except FileNotFoundError:
            same = False
        if not same:
            print(f"{args.out} is not what gen_model.py makes from the installed botocore; "
                  "run tools/bedrock-sim/gen_model.py", file=sys.stderr)
        return 0 if same else 1
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
