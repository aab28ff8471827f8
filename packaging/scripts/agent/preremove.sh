#!/bin/sh
# shoelace-agent preremove (deb prerm and rpm %preun): stop and disable the
# service on removal, not on upgrade.
set -e
unit=shoelace-agent.service
case "$1" in
remove | 0) ;; # deb: remove; rpm: 0 = erase (1 = upgrade)
*) exit 0 ;;
esac
command -v systemctl >/dev/null 2>&1 || exit 0
if [ -d /run/systemd/system ]; then
	systemctl stop "$unit" || true
fi
systemctl disable "$unit" || true
exit 0
