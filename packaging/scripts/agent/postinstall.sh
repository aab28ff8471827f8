#!/bin/sh
# shoelace-agent postinstall (deb postinst and rpm %post).
# First install: enable the service but do not start it; it starts at boot
# once /etc/shoelace/token exists (ConditionPathExists in the unit).
# Upgrade: restart the service only if it was running (try-restart), and
# leave the administrator's enable/disable choice alone.
set -e
unit=shoelace-agent.service

upgrade=false
case "$1" in
configure) if [ -n "$2" ]; then upgrade=true; fi ;; # deb: configure <previous version>
abort-*) exit 0 ;;
[0-9]*) if [ "$1" -ge 2 ]; then upgrade=true; fi ;; # rpm: 1 = install, 2 = upgrade
esac
# deb: installed again after a removal (its config kept): an install, not an
# upgrade; preremove disabled the unit and left this mark.
if [ -e "${DPKG_ROOT:-}/var/lib/shoelace/.package-removed" ]; then
	upgrade=false
	rm -f "${DPKG_ROOT:-}/var/lib/shoelace/.package-removed"
fi

# The package creates it 0700, but dpkg leaves an existing directory alone.
if [ -d /var/lib/shoelace ]; then
	chmod 0700 /var/lib/shoelace
fi

# deb: /etc/shoelace/agent.yaml is no conffile (first-boot configuration
# rewrites it on every VM, and a changed default would stop each upgrade at
# dpkg's conffile prompt): an install creates it from the packaged default
# when it is missing, an upgrade never touches it (one deleted stays deleted,
# as a conffile would). rpm ships it as %config(noreplace): it exists here.
conf="${DPKG_ROOT:-}/etc/shoelace/agent.yaml"
if [ "$upgrade" = false ] && [ ! -e "$conf" ] && [ ! -L "$conf" ]; then
	install -m 0640 "${DPKG_ROOT:-}/usr/share/shoelace-agent/agent.yaml" "$conf"
fi

# A unit that `shoelace-agent install` wrote (without the package) overrides the package's,
# and runs the binary it was installed from: this package's would never run.
override="${DPKG_ROOT:-}/etc/systemd/system/$unit"
if [ -f "$override" ] && ! grep -q '^ExecStart=/usr/bin/' "$override"; then
	echo "shoelace-agent: $override (written by \`shoelace-agent install\`) overrides this package's unit and runs $(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$override"), not /usr/bin: remove it (rm $override; systemctl daemon-reload) to run the package's" >&2
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
	# Works without a running systemd too (image builds, chroots).
	systemctl enable "$unit" || true
fi
exit 0
