#!/usr/bin/env bash
# The static checks of `npm test`: the type check and the linter, side by side
# (each alone takes 10-20 s on a 2-core machine); fails if either fails.
set -u
cd "$(dirname "$0")/.."
# console/ (browser code, JSX) has its own tsconfig: DOM types, no Node globals.
{ npx tsc -p tsconfig.json --noEmit && npx tsc -p console/tsconfig.json --noEmit; } & typecheck=$!
npx eslint .; lint=$?
wait "$typecheck"; types=$?
[ "$types" -eq 0 ] || echo "check: the type check failed" >&2
[ "$lint" -eq 0 ] || echo "check: the linter failed" >&2
exit $(( types != 0 || lint != 0 ))
