#!/usr/bin/env bash
# Style checks that reviews should not have to make: clang-format, banned functions and
# function length.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
status=0
files=$(git ls-files '*.c' '*.h')
if ! clang-format --dry-run -Werror $files 2>/tmp/aiq-format.$$; then
    echo "lint: these files need clang-format -i:"
    grep -o '^[^:]*\.[ch]' /tmp/aiq-format.$$ | sort -u | sed 's/^/  /'
    status=1
fi
rm -f /tmp/aiq-format.$$
# Unbounded or unchecked libc calls; use snprintf, memcpy with a checked length, strtol.
if grep -nE '\b(sprintf|vsprintf|strcpy|strcat|atoi|atol|gets)\s*\(' $files; then
    echo "lint: banned function (see STYLE.md: sprintf, strcpy, strcat, atoi, gets)"
    status=1
fi
# STYLE.md rule 10, short functions: list those over SOFT lines, fail on any over HARD.
# HARD is 100: after the Kafka-layer refactor only one function was longer (submit.c's
# option parser, a flat switch), so it caps growth without forcing a rewrite today. That
# one is held at its current length instead; shrink it and lower its entry, never raise it.
SOFT=60 HARD=100
EXEMPT="producer/submit.c:parse_opts:153"
lengths=$(awk '
    FNR == 1 { sig = ""; start = 0 }
    /^[A-Za-z_].*\(/ && !start { sig = $0; line = FNR }
    /^\{$/ && sig != "" { start = FNR; next }
    /^\}/ && start {
        name = sig
        if (match(sig, /[A-Za-z_][A-Za-z0-9_]*\(/)) name = substr(sig, RSTART, RLENGTH - 1)
        print FNR - start - 1, FILENAME, line, name
        start = 0; sig = ""
    }' $(git ls-files '*.c'))
long=0
while read -r n file line name; do
    [ "$n" -gt "$SOFT" ] || continue
    long=$((long + 1))
    cap=$HARD
    for e in $EXEMPT; do
        [ "${e%:*}" = "$file:$name" ] && cap=${e##*:}
    done
    if [ "$n" -gt "$cap" ]; then
        echo "lint: $file:$line $name() has $n lines, over the cap of $cap (STYLE.md rule 10)"
        status=1
    else
        echo "lint: note: $file:$line $name() has $n lines (aim for under $SOFT)"
    fi
done <<<"$lengths"
[ "$status" = 0 ] && echo "lint: ok ($(echo $files | wc -w) files, $long function(s) over $SOFT lines)"
exit $status
