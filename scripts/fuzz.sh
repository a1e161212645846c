#!/usr/bin/env bash
# Long fuzz runs of the plugin binary (test/fuzz). npm test runs 1,000 cases
# with a fixed seed; this runs as many as asked with a seed of your choice
# and collects every problem instead of stopping at the first. The summary
# counts cases per hostile-input class (races, hostile paths, `%` names,
# oversize values) for the reliability figures.
#
#   FUZZ_SEED         seed (default: random, printed so a run can be replayed)
#   FUZZ_CASES        number of cases (default 10000)
#   FUZZ_CONCURRENCY  plugin processes at once (default 8)
#   FUZZ_CASE_MS      per-case time bound in ms (default 5000)
#   FUZZ_BIN          another build to fuzz, e.g. dist/tsflannel
#   FUZZ_REPORT       summary JSON (default build/reliability/fuzz-<seed>.json)
set -euo pipefail
source "$(dirname "$0")/reliability-env.sh"
reliability_init fuzz
reliability_default FUZZ_SEED "$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')"
reliability_default FUZZ_CASES 10000
reliability_default FUZZ_KEEP_GOING 1
reliability_default FUZZ_REPORT "$PWD/build/reliability/fuzz-$FUZZ_SEED.json"
echo "[fuzz] seed $FUZZ_SEED, $FUZZ_CASES cases (replay: FUZZ_SEED=$FUZZ_SEED FUZZ_CASES=$FUZZ_CASES npm run fuzz)" >&2
status=0
npx --no-install vitest run test/fuzz/plugin-fuzz.test.ts -t 'mutated invocations' || status=$?
echo "[fuzz] summary in $FUZZ_REPORT" >&2
reliability_classes "$FUZZ_REPORT" | sed 's/^/[fuzz] /' >&2
exit "$status"
