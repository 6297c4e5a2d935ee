#!/usr/bin/env bash
# Style checks that reviews should not have to make: clang-format and banned functions.
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
[ "$status" = 0 ] && echo "lint: ok ($(echo $files | wc -w) files)"
exit $status
