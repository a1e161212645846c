#!/usr/bin/env bash
# Long soak of the plugin binary (test/soak/soak.ts): ADD/CHECK/DEL kept in
# flight on a node netns with a share of plugin processes SIGKILLed, same-
# attachment races and hostile invocations mixed in, sampled every second
# for duplicate IPs, then the runtime's clean-up and a leak check.
#
#   SOAK_SECONDS     run time (default 300)
#   SOAK_IN_FLIGHT   operations in flight (default 20)
#   SOAK_KILL_SHARE  share of plugin processes SIGKILLed (default 0.1)
#   SOAK_REPORT      report JSON (default build/reliability/soak-<seconds>s.json)
set -euo pipefail
source "$(dirname "$0")/reliability-env.sh"
reliability_init soak
reliability_default SOAK_TEST_SECONDS "${SOAK_SECONDS:-300}"
reliability_default SOAK_REPORT "$PWD/build/reliability/soak-${SOAK_TEST_SECONDS}s.json"
echo "[soak] $SOAK_TEST_SECONDS s, report in $SOAK_REPORT" >&2
status=0
npx --no-install vitest run test/integration/soak.test.ts -t 'plugins SIGKILLed' || status=$?
reliability_classes "$SOAK_REPORT" | sed 's/^/[soak] /' >&2
exit "$status"
