# Sourced by scripts/fuzz.sh and scripts/soak.sh: the environment both long
# runs share. They need root (network namespaces), a built tree, a place for
# their JSON reports, and settings taken from the environment with defaults.
#
#   reliability_init NAME        cd to the repo, require root, run setup, make build/reliability
#   reliability_default VAR VAL  export VAR, keeping a value the caller set
#   reliability_classes FILE     print a report's per-class counts (issue 11's hostile-input classes)

reliability_init() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  if [ "$(id -u)" -ne 0 ]; then
    echo "$1: needs root (network namespaces)" >&2
    exit 1
  fi
  bash scripts/setup.sh
  mkdir -p build/reliability
}

reliability_default() {
  local name=$1 value=$2
  export "$name=${!name:-$value}"
}

reliability_classes() {
  [ -f "$1" ] || return 0
  node -e '
    const r = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
    const parts = [];
    for (const [k, v] of Object.entries(r.byClass ?? {})) parts.push(`${k} ${v.cases} (${v.problems} with problems)`);
    if (r.races) parts.push(`race.sameIdAdds ${r.races.sameIdAdds}`, `race.addDel ${r.races.addDel}`);
    for (const [k, v] of Object.entries(r.hostile ?? {})) parts.push(`${k} ${v.calls} (${v.wrong} answered wrongly)`);
    if (parts.length) console.log(`classes: ${parts.join(", ")}`);
  ' "$1"
}
