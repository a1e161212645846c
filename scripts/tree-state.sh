#!/usr/bin/env bash
# `npm test` must leave the git tree as it found it: setup and tests write
# only ignored paths (build/, dist/, native/build/, node_modules/) or outside
# the repository. pretest records the tree's state, posttest compares:
#
#   bash scripts/tree-state.sh record   # before setup
#   bash scripts/tree-state.sh verify   # after the tests; exit 1 with the changes
#
# The state is every tracked file's content against HEAD plus every untracked,
# not ignored file, so a developer's uncommitted work is not flagged, only
# what the run changed. Outside a git checkout both are no-ops.
set -euo pipefail
cd "$(dirname "$0")/.."

git rev-parse --is-inside-work-tree >/dev/null 2>&1 || exit 0
state_file=$(git rev-parse --git-path tsflannel-tree-state)

state() {
  git status --porcelain=v1 --untracked-files=all
  git diff HEAD --binary
  git ls-files -z --others --exclude-standard | xargs -0 -r sha256sum --
}

case ${1:-} in
  record)
    state >"$state_file"
    git status --porcelain=v1 --untracked-files=all >"$state_file.status"
    ;;
  verify)
    [ -f "$state_file" ] || exit 0
    if ! state | cmp -s - "$state_file"; then
      echo '[tree-state] npm test changed files git tracks or does not ignore:' >&2
      if diff "$state_file.status" <(git status --porcelain=v1 --untracked-files=all) >&2; then
        echo '(the same files as before, with other content)' >&2
      fi
      exit 1
    fi
    rm -f "$state_file" "$state_file.status"
    ;;
  *) echo "usage: $0 record|verify" >&2; exit 2 ;;
esac
