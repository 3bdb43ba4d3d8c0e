#!/usr/bin/env bash
# Install the example plugins in hooks/ into a virtual environment for real, and check through the
# b12screen command that they are discovered, listed and run; that the broken one is reported by name
# while everything else runs, and is fatal in strict mode; that B12SCREEN_LOAD_PLUGINS and
# B12SCREEN_DISABLE_PLUGINS work; and that the example plugins' own tests pass. Then uninstall them.
#
#   hooks/ci-check.sh [VENV_BIN]    VENV_BIN: the bin/ folder of a virtual environment where b12screen is
#                                   installed (default: .venv/bin of this repository)
#
# Prints one line per check and exits non-zero at the first failed check. The example plugins are
# uninstalled again on every exit, so the main test suite is not affected.
set -Eeuo pipefail

HOOKS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HOOKS")
BIN=$(cd "${1:-$ROOT/.venv/bin}" && pwd)
PY="$BIN/python"
B12="$BIN/b12screen"
AS_OF=2026-11-24
DISTS=(b12screen-pancreas b12screen-site-codes b12screen-broken)
PANC_FIXTURE="$HOOKS/b12screen-pancreas/fixtures/pancreas-patients.json"
PANC_EXPECTED="$HOOKS/b12screen-pancreas/fixtures/expected.json"
SITE_FIXTURE="$HOOKS/b12screen-site-codes/fixtures/site-codes-patients.json"
SITE_EXPECTED="$HOOKS/b12screen-site-codes/fixtures/expected.json"

WORK=$(mktemp -d)
OUT="$WORK/stdout"
ERR="$WORK/stderr"
: >"$OUT"
: >"$ERR"
N=0
CHECK="setting up"

unset B12SCREEN_LOAD_PLUGINS B12SCREEN_DISABLE_PLUGINS B12SCREEN_STRICT_PLUGINS

uninstall() { "$PY" -m pip uninstall -y -q "${DISTS[@]}" >/dev/null 2>&1 || true; }
on_error() {
  trap - ERR
  echo "FAIL $N - $CHECK" >&2
  sed -n '1,25s/^/    stdout: /p' "$OUT" >&2
  sed -n '1,25s/^/    stderr: /p' "$ERR" >&2
}
on_exit() { local status=$?; uninstall; rm -rf "$WORK"; exit "$status"; }
trap on_error ERR
trap on_exit EXIT

check() { N=$((N + 1)); CHECK=$1; }   # check DESCRIPTION: start a check
ok() { echo "ok   $N - $CHECK"; }       # the check passed

# run EXIT CMD...: run CMD (stdout to $OUT, stderr to $ERR); fail unless it exits with EXIT
run() {
  local want=$1 got=0
  shift
  "$@" >"$OUT" 2>"$ERR" || got=$?
  if [ "$got" != "$want" ]; then
    echo "    command: $* (exit $got, expected $want)" >&2
    return 1
  fi
}

# no_match PATTERN FILE: fail if FILE contains PATTERN
no_match() {
  if grep -q "$1" "$2"; then
    echo "    unexpected '$1' in $(basename "$2")" >&2
    return 1
  fi
}

# assert_json CODE [ARG...]: run Python CODE with `data` = the JSON in $OUT and `args` = ARGs
assert_json() {
  "$PY" - "$OUT" "$@" <<'PYEOF'
import json, sys
data = json.load(open(sys.argv[1], encoding="utf-8"))
args = sys.argv[3:]
exec(sys.argv[2])
PYEOF
}

# The report in $OUT has the outcomes of the expected.json given as args[0] (or, with args[1] = "none",
# the outcome no-suggestion for every patient).
MATCHES_EXPECTED='
expected = json.load(open(args[0], encoding="utf-8"))["patients"]
keys = ("outcome", "priority", "rules", "risk_factors", "modifiers")
got = {e["patient"]: {k: e[k] for k in keys} for e in data}
if len(args) > 1:
    assert set(got) == set(expected) and {v["outcome"] for v in got.values()} == {"no-suggestion"}, got
else:
    assert got == expected, f"got {got}\nexpected {expected}"
'

# -- install ----------------------------------------------------------------------------------------

check "b12screen is installed in $BIN"
"$PY" -c "import b12screen" && [ -x "$B12" ]
ok

check "pip install ${DISTS[*]} (from hooks/)"
mkdir "$WORK/src"
for dist in "${DISTS[@]}"; do cp -R "$HOOKS/$dist" "$WORK/src/$dist"; done   # builds leave no files in hooks/
"$PY" -m pip install -q --no-deps "${DISTS[@]/#/$WORK/src/}" >"$OUT" 2>"$ERR"
ok

check "the three entry points of the group b12screen are installed"
"$PY" - <<'PYEOF'
from importlib import metadata
eps = {ep.name: ep.dist.name for ep in metadata.entry_points(group="b12screen")}
want = {"pancreas": "b12screen-pancreas", "site_codes": "b12screen-site-codes", "broken": "b12screen-broken"}
assert want.items() <= eps.items(), eps
PYEOF
ok

# -- discovery and listing ----------------------------------------------------------------------------

check "b12screen plugins --json exits 0 and names the broken plugin on stderr"
run 0 "$B12" plugins --json
grep -q "plugin 'broken' failed to load" "$ERR"
ok

check "plugins --json: pancreas = b12screen-pancreas 0.1.0, both hooks, rule PANC-1"
assert_json '
row = next(r for r in data if r["name"] == "pancreas")
assert (row["distribution"], row["version"], row["status"]) == ("b12screen-pancreas", "0.1.0", "loaded"), row
assert row["hooks"] == ["b12screen_rules", "b12screen_value_sets"] and row["rules"] == ["PANC-1"], row'
ok

check "plugins --json: site_codes = b12screen-site-codes 0.1.0, b12screen_value_sets only, no rules"
assert_json '
row = next(r for r in data if r["name"] == "site_codes")
assert (row["distribution"], row["version"], row["status"]) == ("b12screen-site-codes", "0.1.0", "loaded"), row
assert row["hooks"] == ["b12screen_value_sets"] and row["rules"] == [], row'
ok

check "plugins --json: broken = b12screen-broken 0.1.0, status failed with its RuntimeError"
assert_json '
row = next(r for r in data if r["name"] == "broken")
assert (row["distribution"], row["version"], row["status"]) == ("b12screen-broken", "0.1.0", "failed"), row
assert row["error"].startswith("RuntimeError: b12screen-broken is a deliberately broken"), row'
ok

check "plugins --json: the built-in rule plugins are still loaded"
assert_json '
rules = {r["name"]: r["rules"] for r in data if r["builtin"]}
assert len(rules) == 6 and "MET-1" in rules["b12screen.rules.medication"], rules'
ok

check "b12screen plugins (text) lists pancreas, site_codes and broken"
run 0 "$B12" plugins
grep -Eq '^pancreas +b12screen-pancreas 0\.1\.0 +hooks: b12screen_rules, b12screen_value_sets +rules: PANC-1' "$OUT"
grep -Eq '^site_codes +b12screen-site-codes 0\.1\.0' "$OUT"
grep -Eq '^broken +b12screen-broken 0\.1\.0 +FAILED: RuntimeError' "$OUT"
ok

check "b12screen rules --json lists PANC-1, owned by the pancreas plugin"
run 0 "$B12" rules --json
assert_json '
row = next(r for r in data if r["id"] == "PANC-1")
assert row["plugin"] == "pancreas" and row["priority"] == "low" and row["status"] == "suggests", row'
ok

# -- the plugins' rules and codes fire ----------------------------------------------------------------

check "screen the pancreas fixture: exit 0 despite the broken plugin, PANC-1 outcomes as expected"
run 0 "$B12" screen --as-of "$AS_OF" --format report "$PANC_FIXTURE"
grep -q "plugin 'broken' failed to load and was skipped" "$ERR"
assert_json "$MATCHES_EXPECTED" "$PANC_EXPECTED"
ok

check "screen the pancreas fixture as Flags: PANC-1 is a reason in the Flag"
run 0 "$B12" screen --as-of "$AS_OF" --format ndjson "$PANC_FIXTURE"
[ "$(wc -l <"$OUT")" -eq 2 ]
grep -q '"code":"PANC-1"' "$OUT"
ok

check "screen the site-codes fixture: local codes only trigger MET-1, MET-2 and MOD-RECENT"
run 0 "$B12" screen --as-of "$AS_OF" --format report "$SITE_FIXTURE"
assert_json "$MATCHES_EXPECTED" "$SITE_EXPECTED"
ok

# -- strict mode -------------------------------------------------------------------------------------

check "--strict-plugins makes the broken plugin fatal: screen and rules exit 2, plugins exits 1"
run 2 "$B12" screen --strict-plugins --as-of "$AS_OF" "$PANC_FIXTURE"
grep -q "plugin 'broken' failed to load" "$ERR"
run 2 "$B12" rules --strict-plugins
run 1 "$B12" plugins --strict-plugins
grep -q "broken" "$ERR"
ok

check "B12SCREEN_STRICT_PLUGINS=1 makes it fatal too"
run 2 env B12SCREEN_STRICT_PLUGINS=1 "$B12" screen --as-of "$AS_OF" "$PANC_FIXTURE"
run 1 env B12SCREEN_STRICT_PLUGINS=1 "$B12" plugins
ok

# -- choosing and blocking plugins ------------------------------------------------------------------

check "B12SCREEN_DISABLE_PLUGINS=broken: no failure, no warning, strict mode passes"
run 0 env B12SCREEN_DISABLE_PLUGINS=broken B12SCREEN_STRICT_PLUGINS=1 "$B12" plugins --json
assert_json 'assert "broken" not in {r["name"] for r in data} and {"pancreas", "site_codes"} <= {r["name"] for r in data}'
[ ! -s "$ERR" ]
run 0 env B12SCREEN_DISABLE_PLUGINS=broken "$B12" screen --strict-plugins --as-of "$AS_OF" --format report "$PANC_FIXTURE"
no_match "warning: plugin" "$ERR"  # the old-data warning of the fixture may stand
ok

check "B12SCREEN_DISABLE_PLUGINS=pancreas: PANC-1 is gone from rules and from the report"
run 0 env B12SCREEN_DISABLE_PLUGINS=pancreas,broken "$B12" rules --json
assert_json 'assert "PANC-1" not in {r["id"] for r in data} and "MET-1" in {r["id"] for r in data}'
run 0 env B12SCREEN_DISABLE_PLUGINS=pancreas,broken "$B12" screen --as-of "$AS_OF" --format report "$PANC_FIXTURE"
assert_json 'assert all("PANC-1" not in e["risk_factors"] for e in data), data'
ok

check "B12SCREEN_LOAD_PLUGINS=pancreas: only pancreas is loaded, the local codes no longer match"
run 0 env B12SCREEN_LOAD_PLUGINS=pancreas "$B12" plugins --json
assert_json 'assert {r["name"] for r in data if not r["builtin"]} == {"pancreas"}, data'
[ ! -s "$ERR" ]
run 0 env B12SCREEN_LOAD_PLUGINS=pancreas "$B12" screen --as-of "$AS_OF" --format report "$SITE_FIXTURE"
assert_json "$MATCHES_EXPECTED" "$SITE_EXPECTED" none
ok

check "B12SCREEN_LOAD_PLUGINS accepts distribution names; empty loads no installed plugin"
run 0 env B12SCREEN_LOAD_PLUGINS=b12screen-site-codes "$B12" plugins --json
assert_json 'assert {r["name"] for r in data if not r["builtin"]} == {"site_codes"}, data'
run 0 env B12SCREEN_LOAD_PLUGINS= "$B12" plugins --json
assert_json 'assert all(r["builtin"] for r in data), data'
ok

# -- the plugins' own tests ----------------------------------------------------------------------------

for dist in b12screen-pancreas b12screen-site-codes; do
  check "the own tests of $dist pass against the installed plugin"
  run 0 "$PY" -m pytest -q -p no:cacheprovider "$HOOKS/$dist"
  grep -Eq '[0-9]+ passed' "$OUT"
  ok
done

# -- uninstall ----------------------------------------------------------------------------------------

check "uninstall the example plugins: only the built-in plugins remain"
"$PY" -m pip uninstall -y -q "${DISTS[@]}" >"$OUT" 2>"$ERR"
run 0 "$B12" plugins --json
assert_json 'assert all(r["builtin"] for r in data), data'
ok

echo "all $N checks passed"
