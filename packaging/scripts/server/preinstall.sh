#!/bin/sh
# shoelace-server preinstall (deb preinst and rpm %pre): create the system
# user the service runs as, before the package's files are unpacked with it
# as owner.
set -e
if ! getent group shoelace >/dev/null 2>&1; then
	groupadd --system shoelace
fi
if ! getent passwd shoelace >/dev/null 2>&1; then
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/sbin/nologin
	useradd --system --gid shoelace --home-dir /var/lib/shoelace-server \
		--no-create-home --shell "$nologin" --comment "Shoelace server" shoelace
fi
exit 0
