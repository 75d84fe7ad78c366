#!/usr/bin/env bash
# Refreshes apt's package indexes, tolerating a Debian mirror caught mid-sync. Such a mirror fails one
# index ("File has unexpected size ... Mirror sync in progress?"; the bookworm-security armhf index has
# done so for days) and `apt-get update` then exits 100 although every other index was refreshed.
# Tries three times; if the last try still fails, says so and exits 0, so that the `apt-get install`
# after it decides: it succeeds when the packages it needs are in the indexes that did download.
#   bash cross/apt-update.sh          # used by .ci/run and cross/setup.sh
set -uo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
pause="${APT_UPDATE_RETRY_SECONDS:-20}"
for try in 1 2 3; do
  $SUDO apt-get update -qq && exit 0
  echo "apt-update.sh: apt-get update failed (try $try of 3)" >&2
  [ "$try" -lt 3 ] && sleep "$pause"
done
echo "apt-update.sh: going on with the indexes that did download; apt-get install will say if a package is missing" >&2
exit 0
