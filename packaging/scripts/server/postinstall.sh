#!/bin/sh
# shoelace-server postinstall (deb postinst and rpm %post).
# First install: enable the service but do not start it (configure
# /etc/shoelace/server.env first, then `systemctl start shoelace-server`).
# Upgrade: restart the service only if it was running (try-restart).
set -e
unit=shoelace-server.service

upgrade=false
case "$1" in
configure) if [ -n "$2" ]; then upgrade=true; fi ;; # deb: configure <previous version>
abort-*) exit 0 ;;
[0-9]*) if [ "$1" -ge 2 ]; then upgrade=true; fi ;; # rpm: 1 = install, 2 = upgrade
esac
# deb: installed again after a removal (its config kept): an install, not an
# upgrade; preremove disabled the unit and left this mark.
if [ -e "${DPKG_ROOT:-}/var/lib/shoelace-server/.package-removed" ]; then
	upgrade=false
	rm -f "${DPKG_ROOT:-}/var/lib/shoelace-server/.package-removed"
fi

# The data directory holds the embedded etcd and the admin token; dpkg
# leaves an existing directory's owner and mode alone.
if [ -d /var/lib/shoelace-server ]; then
	chown shoelace:shoelace /var/lib/shoelace-server
	chmod 0700 /var/lib/shoelace-server
fi

# A unit that `shoelace server install` wrote (without the package) overrides the package's,
# and runs the binary it was installed from: this package's would never run.
override="${DPKG_ROOT:-}/etc/systemd/system/$unit"
if [ -f "$override" ] && ! grep -q '^ExecStart=/usr/bin/' "$override"; then
	echo "shoelace-server: $override (written by \`shoelace server install\`) overrides this package's unit and runs $(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$override"), not /usr/bin: remove it (rm $override; systemctl daemon-reload) to run the package's" >&2
fi

command -v systemctl >/dev/null 2>&1 || exit 0
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
if [ "$upgrade" = true ]; then
	if [ -d /run/systemd/system ]; then
		systemctl try-restart "$unit" || true
	fi
else
	systemctl enable "$unit" || true
fi
exit 0
