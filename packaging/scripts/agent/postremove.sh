#!/bin/sh
# shoelace-agent postremove (deb postrm and rpm %postun).
set -e
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
fi
# deb purge: the cache holds only a copy of what the server serves;
# agent.yaml is postinstall's (not a conffile, which dpkg would remove).
if [ "$1" = purge ]; then
	rm -rf "${DPKG_ROOT:-}/var/lib/shoelace"
	rm -f "${DPKG_ROOT:-}/etc/shoelace/agent.yaml"
fi
exit 0
