#!/bin/sh
# shoelace-agent postremove (deb postrm and rpm %postun).
set -e
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
fi
# deb purge: the cache holds only a copy of what the server serves.
if [ "$1" = purge ]; then
	rm -rf /var/lib/shoelace
fi
exit 0
