#!/bin/sh
# shoelace-server preremove (deb prerm and rpm %preun): stop and disable the
# service on removal, not on upgrade.
set -e
unit=shoelace-server.service
case "$1" in
remove | 0) ;; # deb: remove; rpm: 0 = erase (1 = upgrade)
*) exit 0 ;;
esac
# deb: a package removed but not purged keeps its config, and a later
# install runs postinst as `configure <that version>`, like an upgrade:
# leave a mark so that postinst enables the unit again (rpm passes 1).
if [ "$1" = remove ]; then
	mkdir -p -m 0700 "${DPKG_ROOT:-}/var/lib/shoelace-server" && : >"${DPKG_ROOT:-}/var/lib/shoelace-server/.package-removed" || true
fi
command -v systemctl >/dev/null 2>&1 || exit 0
if [ -d /run/systemd/system ]; then
	systemctl stop "$unit" || true
fi
systemctl disable "$unit" || true
exit 0
