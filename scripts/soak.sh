#!/usr/bin/env bash
# Long soak of the plugin binary (test/soak/soak.ts): ADD/CHECK/DEL kept in
# flight on a node netns with a share of plugin processes SIGKILLed, sampled
# every second for duplicate IPs, then the runtime's clean-up and a leak check.
#
#   SOAK_SECONDS     run time (default 300)
#   SOAK_IN_FLIGHT   operations in flight (default 20)
#   SOAK_KILL_SHARE  share of plugin processes SIGKILLed (default 0.1)
#   SOAK_REPORT      report JSON (default build/reliability/soak-<seconds>s.json)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "soak: needs root (network namespaces)" >&2
  exit 1
fi
bash scripts/setup.sh
export SOAK_TEST_SECONDS="${SOAK_SECONDS:-300}"
mkdir -p build/reliability
export SOAK_REPORT="${SOAK_REPORT:-$PWD/build/reliability/soak-${SOAK_TEST_SECONDS}s.json}"
echo "[soak] $SOAK_TEST_SECONDS s, report in $SOAK_REPORT" >&2
exec npx --no-install vitest run test/integration/soak.test.ts -t 'plugins SIGKILLed'
