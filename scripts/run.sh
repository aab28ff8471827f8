#!/usr/bin/env bash
# `make run`: a Shoelace server on an embedded single-node etcd (data under ./run/), the example
# appliance's keys, an agent token for it, and an agent rendering the example templates into ./run/out/.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
# SHOELACE_RUN_DIR gives a second `make run` of one checkout a store of its own (with its own
# SHOELACE_RUN_PORT): two servers can never share one data dir.
run=${SHOELACE_RUN_DIR:-$top/run}
case $run in /*) ;; *) run=$top/$run ;; esac
runname=${run#"$top"/} # as the user would type it from the checkout
appliance=web-frontend
example=$top/examples/$appliance
port=${SHOELACE_RUN_PORT:-7400}
addr=127.0.0.1:$port
# Every flag of the server and the CLI reads a SHOELACE_* variable: settings exported for another
# server (SHOELACE_ETCD_ENDPOINTS, SHOELACE_TOKEN, SHOELACE_OUTPUT=json, …) must not leak in here.
for v in $(compgen -e); do
	case $v in SHOELACE_*) unset "$v" ;; esac
done

mkdir -p "$run/out" "$run/cache"
chmod 700 "$run" "$run/cache"

pids=()
# On Ctrl-C (or SIGTERM, SIGHUP) the script exits at once, so that it starts nothing after the
# signal; on every exit it stops what it started. A second signal (Ctrl-C pressed twice, or
# timeout(1), which signals its child and then its whole process group) must not cut that short.
cleanup() {
	local rc=$?
	trap - EXIT
	trap '' INT TERM HUP
	local said=
	for pid in "${pids[@]}"; do
		kill -0 "$pid" 2>/dev/null || continue
		if [ -z "$said" ]; then
			echo
			echo "stopping what make run started…"
			said=1
		fi
		kill -TERM "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

make -s build >/dev/null
if bin/shoelace health --addr "http://$addr" >/dev/null 2>&1; then
	echo "make run: something already answers on $addr; stop it or set SHOELACE_RUN_PORT" >&2
	exit 1
fi

touch "$run/server.log"
logstart=$(($(wc -c <"$run/server.log") + 1))
bin/shoelace server --listen "$addr" --data-dir "$run/data" --admin-token-file "$run/admin.token" \
	2>>"$run/server.log" &
pids+=($!)

# server_exited explains why the server just exited, from what it logged this time.
server_exited() {
	local log
	log=$(tail -c "+$logstart" "$run/server.log")
	if grep -q 'data dir is in use by another process' <<<"$log"; then
		echo "make run: the store in $run is in use by another make run of this checkout; stop that one, or give this one a directory and a port of its own: SHOELACE_RUN_DIR=/tmp/shoelace-run2 SHOELACE_RUN_PORT=7401 make run" >&2
	elif grep -q 'address already in use' <<<"$log"; then
		echo "make run: another program listens on $addr; stop it, or give make run a port of its own: SHOELACE_RUN_PORT=7401 make run" >&2
	else
		echo "make run: the server exited; its last lines ($run/server.log):" >&2
		tail -n 20 <<<"$log" >&2
	fi
	exit 1
}

export SHOELACE_ADDR=http://$addr
for _ in $(seq 1 300); do
	bin/shoelace health >/dev/null 2>&1 && break
	kill -0 "${pids[0]}" 2>/dev/null || server_exited
	sleep 0.1
done
bin/shoelace health >/dev/null || { echo "make run: the server did not become healthy; see $run/server.log" >&2; exit 1; }

# The server writes the admin token at the first start of a store, never again.
for _ in $(seq 1 50); do
	[ -s "$run/admin.token" ] && break
	sleep 0.1
done
if [ ! -s "$run/admin.token" ]; then
	echo "make run: $run/admin.token is missing but $run/data holds a store made earlier (its admin token is written only at its first start); start afresh: rm -rf $runname" >&2
	exit 1
fi
export SHOELACE_TOKEN_FILE=$run/admin.token
# The file holds the token written at the store's first start; rotating the admin token (the
# runbook's procedure) leaves it stale.
rc=0
bin/shoelace token ls >/dev/null 2>"$run/token-check.err" || rc=$?
if [ $rc -ne 0 ]; then
	if [ $rc -eq 5 ]; then
		echo "make run: $run/admin.token no longer holds an admin token of the store in $run/data (was the admin token rotated or revoked?); put the current admin token into $run/admin.token (mode 0600), or start afresh: rm -rf $runname" >&2
	else
		echo "make run: $(cat "$run/token-check.err")" >&2
	fi
	exit 1
fi
rm -f "$run/token-check.err"

# The example keys: shared ones through kv put, the appliance's own through a whole-appliance apply.
# A write of what the store holds already (a run after the first) notes on stderr that it wrote
# nothing: a note for pipelines, not for this output. Say what a write said only when it failed.
seed() {
	local rc=0
	"$@" >/dev/null 2>"$run/seed.err" || rc=$?
	if [ $rc -ne 0 ]; then
		echo "make run: seeding $appliance failed ($2 $3 $4): $(cat "$run/seed.err")" >&2
		exit 1
	fi
}
seed bin/shoelace kv put shared/system/ntp/servers "0.pool.ntp.org 1.pool.ntp.org"
seed bin/shoelace kv put shared/system/dns/nameservers "10.0.0.2 10.0.0.3"
seed bin/shoelace kv put shared/system/dns/search "internal.example.com"
seed bin/shoelace appliance apply "$appliance" -f "$example/appliance.yaml"
rm -f "$run/seed.err"

# An agent token for the example appliance (a fresh one each run; the old one is revoked).
agent_token=$run/agent.token
if [ -n "${SHOELACE_TOKEN_FILE:-}" ]; then
	bin/shoelace token revoke "$appliance-make-run" >/dev/null 2>&1 || true
	(umask 077 && bin/shoelace token create --name "$appliance-make-run" --appliance "$appliance" | tail -n 1 >"$agent_token")
	chmod 600 "$agent_token"
fi

cat >"$run/agent.yaml" <<YAML
# Written by make run.
server: http://$addr
$( [ -s "$agent_token" ] && echo "token_file: $agent_token" )
appliance: $appliance
cache_dir: $run/cache
templates:
  - source: $example/templates/resolv.conf.tmpl
    destination: $run/out/resolv.conf
    stage: system
    perms: "0644"
  - source: $example/templates/chrony.conf.tmpl
    destination: $run/out/chrony.conf
    stage: system
    perms: "0644"
  - source: $example/templates/nginx.conf.tmpl
    destination: $run/out/nginx.conf
    perms: "0644"
    command: echo "nginx would reload now"
  - source: $example/templates/app.env.tmpl
    destination: $run/out/app.env
    perms: "0600"
    command: echo "the app would restart now"
YAML
chmod 600 "$run/agent.yaml"
# A config the agent refuses (cache_dir below a directory others may write: chmod go-w it) is said
# here, not only in agent.log.
bin/shoelace-agent validate --config "$run/agent.yaml" >/dev/null || { echo "make run: the agent refuses $run/agent.yaml (above)" >&2; exit 1; }

bin/shoelace-agent run --config "$run/agent.yaml" 2>>"$run/agent.log" &
pids+=($!)

cat <<TXT

Shoelace is running.
  server   http://$addr        (log: $run/server.log, data: $run/data)
  agent    appliance $appliance  (log: $run/agent.log, files: $run/out/)
  console  http://$addr/ui/    (sign in with the token in $run/admin.token)

In another terminal:
  export SHOELACE_ADDR=http://$addr SHOELACE_TOKEN_FILE=$run/admin.token
  bin/shoelace kv put appliances/$appliance/app/port 8081     # $run/out/nginx.conf changes
  bin/shoelace appliance get $appliance
  curl -H "Authorization: Bearer \$(cat $run/admin.token)" http://$addr/v1/appliances/$appliance

Ctrl-C stops both.
TXT
tail -n 0 -F "$run/agent.log" &
pids+=($!)
# Stop when the server or the agent exits, on Ctrl-C, or when whoever started this script (make)
# is gone without passing a signal on (killed with SIGKILL): never leave the two running alone.
parent=$PPID
while kill -0 "${pids[0]}" 2>/dev/null && kill -0 "${pids[1]}" 2>/dev/null && kill -0 "$parent" 2>/dev/null; do
	sleep 1
done
