#!/bin/sh
# shoelace-agent postremove (deb postrm and rpm %postun).
set -e
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
fi
# deb purge: the cache holds only a copy of what the server serves (and the
# instance token); agent.yaml is postinstall's (not a conffile, which dpkg
# would remove); the token that first boot wrote for the unit's
# ConditionPathExists is this agent's credential, of no use without it, and
# one a server can issue again: no secret stays behind.
if [ "$1" = purge ]; then
	rm -rf "${DPKG_ROOT:-}/var/lib/shoelace"
	# Files (or links: removed, never what they lead to) only: a directory by one of
	# these names is no file of ours, and rm -f failed on it, and with it the purge.
	for f in "${DPKG_ROOT:-}/etc/shoelace/agent.yaml" "${DPKG_ROOT:-}/etc/shoelace/token"; do
		if [ -L "$f" ] || [ ! -d "$f" ]; then
			rm -f "$f"
		fi
	done
fi
exit 0
