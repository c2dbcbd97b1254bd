#!/usr/bin/env bash
# expect_fail.sh EXPECTED OUTFILE -- CMD...: CMD must fail cleanly: a non-zero exit
# that is not a signal or sanitizer abort, exactly one line on stderr containing
# EXPECTED, and OUTFILE ("-" for none) must not exist afterwards.
set -u
expected=$1; outfile=$2; shift 3
[ "$outfile" != "-" ] && rm -f "$outfile"
err=$(mktemp)
"$@" >/dev/null 2>"$err"
rc=$?
lines=$(wc -l <"$err")
fail=0
if [ $rc -eq 0 ]; then echo "FAIL: exit 0, expected an error"; fail=1; fi
if [ $rc -ge 128 ]; then echo "FAIL: killed by signal $((rc-128))"; fail=1; fi
if [ "$lines" -ne 1 ]; then echo "FAIL: $lines lines on stderr, expected 1"; fail=1; fi
if ! grep -qF -- "$expected" "$err"; then echo "FAIL: stderr lacks '$expected'"; fail=1; fi
if [ "$outfile" != "-" ] && ls "$outfile"* >/dev/null 2>&1; then echo "FAIL: $outfile was left behind"; fail=1; fi
echo "exit $rc; stderr:"; cat "$err"
rm -f "$err"
exit $fail
