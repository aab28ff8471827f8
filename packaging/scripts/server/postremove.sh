#!/bin/sh
# shoelace-server postremove (deb postrm and rpm %postun). The data
# directory (the embedded store) and the shoelace user are kept, even on
# purge: deleting a configuration store is never a side effect.
set -e
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
fi
if [ "$1" = purge ]; then
	# preremove's mark only: a store never started leaves nothing behind.
	rm -f /var/lib/shoelace-server/.package-removed
	rmdir /var/lib/shoelace-server 2>/dev/null || true
fi
if [ "$1" = purge ] && [ -d /var/lib/shoelace-server ]; then
	echo "shoelace-server: kept /var/lib/shoelace-server (the store); remove it by hand if you mean to" >&2
fi
exit 0
