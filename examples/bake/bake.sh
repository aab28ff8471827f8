#!/usr/bin/env bash
# Bakes an appliance's system configuration into a VM template (a Packer
# shell provisioner, or any script run while building an image):
#
#   1. installs the shoelace-agent package (when SHOELACE_PACKAGE is given),
#   2. writes a bake-time token and the agent config,
#   3. runs `shoelace-agent once --stage system --no-commands`: the
#      appliance's system-stage templates are rendered, nothing is reloaded,
#   4. removes the token and empties the agent's cache directory (also when a
#      step fails), so that the image holds no credential and no cached view,
#   5. leaves shoelace-agent.service enabled: on a VM made from the image it
#      starts once first-boot configuration writes /etc/shoelace/token
#      (ConditionPathExists), see examples/cloud-init.
#
# Environment:
#   SHOELACE_SERVER           required, e.g. https://shoelace.internal:7400
#   APPLIANCE                 required, the appliance to bake, e.g. web-frontend
#   SHOELACE_BAKE_TOKEN       the bake token (or SHOELACE_BAKE_TOKEN_FILE, which
#                             is not removed: the caller removes it); a token
#                             made with `shoelace token create --appliance`
#   SHOELACE_CA_FILE          optional CA file for the server's certificate;
#                             copied into the image as $SHOELACE_CONFIG_DIR/ca.pem,
#                             which the generated config names (an upload
#                             directory such as /tmp is gone on the VM)
#   SHOELACE_PACKAGE          optional .deb or .rpm to install first
#   SHOELACE_AGENT_CONFIG     optional agent.yaml to install instead of the
#                             generated one (its token_file must be the token
#                             path below)
#   SHOELACE_CONFIG_DIR       default /etc/shoelace
#   SHOELACE_CACHE_DIR        default /var/lib/shoelace
#   SHOELACE_AGENT            default shoelace-agent (from PATH)
#   SKIP_ENABLE=1             do not run `systemctl enable` (tests, chroots
#                             where the package already did)
# Templates come from the image: the agent config's templates: list or
# $SHOELACE_CONFIG_DIR/templates.d/*.yaml (upload them before this script).
set -euo pipefail

die() {
	echo "bake: $*" >&2
	exit 2
}

config_dir="${SHOELACE_CONFIG_DIR:-/etc/shoelace}"
cache_dir="${SHOELACE_CACHE_DIR:-/var/lib/shoelace}"
agent="${SHOELACE_AGENT:-shoelace-agent}"
server="${SHOELACE_SERVER:-}"
appliance="${APPLIANCE:-}"

# Validate everything before writing anything.
[[ -n $server ]] || die "SHOELACE_SERVER is required (e.g. https://shoelace.internal:7400)"
[[ $server =~ ^https?://[^[:space:]\"\'\\]+$ ]] || die "SHOELACE_SERVER=$server: want an http:// or https:// URL without spaces or quotes"
[[ -n $appliance ]] || die "APPLIANCE is required (the appliance to bake, e.g. web-frontend)"
[[ $appliance =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ && ${#appliance} -le 128 ]] ||
	die "APPLIANCE=$appliance: an appliance name is one key segment: [A-Za-z0-9][A-Za-z0-9._-]*, at most 128 bytes"
for dir in "$config_dir" "$cache_dir"; do
	[[ $dir == /* && $dir != *[[:space:]\"\'\\]* ]] || die "$dir: want an absolute path without spaces or quotes"
done
[[ $cache_dir != / && $cache_dir != "$config_dir" ]] || die "SHOELACE_CACHE_DIR=$cache_dir: must be a directory of its own (it is emptied)"
if [[ -n ${SHOELACE_CA_FILE:-} ]]; then
	[[ -r $SHOELACE_CA_FILE ]] || die "SHOELACE_CA_FILE=$SHOELACE_CA_FILE: not readable"
	[[ $SHOELACE_CA_FILE == /* && $SHOELACE_CA_FILE != *[[:space:]\"\'\\]* ]] || die "SHOELACE_CA_FILE: want an absolute path without spaces or quotes"
fi
if [[ -n ${SHOELACE_AGENT_CONFIG:-} && ! -r $SHOELACE_AGENT_CONFIG ]]; then
	die "SHOELACE_AGENT_CONFIG=$SHOELACE_AGENT_CONFIG: not readable"
fi
token="${SHOELACE_BAKE_TOKEN:-}"
if [[ -z $token && -n ${SHOELACE_BAKE_TOKEN_FILE:-} ]]; then
	token="$(<"$SHOELACE_BAKE_TOKEN_FILE")" || die "SHOELACE_BAKE_TOKEN_FILE: cannot read it"
	# The file is the caller's: an upload (Packer's file provisioner into /tmp) lands in the
	# image unless it is removed, and the image must hold no token.
	echo "bake: SHOELACE_BAKE_TOKEN_FILE=$SHOELACE_BAKE_TOKEN_FILE is left where it is: remove it before the image is captured (or pass SHOELACE_BAKE_TOKEN)" >&2
fi
token="${token//[[:space:]]/}"
[[ -n $token ]] || die "SHOELACE_BAKE_TOKEN (or SHOELACE_BAKE_TOKEN_FILE) is required"

# 1. The package.
if [[ -n ${SHOELACE_PACKAGE:-} ]]; then
	case "$SHOELACE_PACKAGE" in
	*.deb) DEBIAN_FRONTEND=noninteractive apt-get install -y "$(realpath "$SHOELACE_PACKAGE")" ;;
	*.rpm) if command -v dnf >/dev/null; then dnf install -y "$SHOELACE_PACKAGE"; else rpm -Uvh "$SHOELACE_PACKAGE"; fi ;;
	*) die "SHOELACE_PACKAGE=$SHOELACE_PACKAGE: want a .deb or .rpm" ;;
	esac
fi
command -v "$agent" >/dev/null || die "$agent not found: install the shoelace-agent package or set SHOELACE_PACKAGE"

# 2. Token and config. From here on, the token goes whatever happens.
token_file="$config_dir/token"
cleanup() {
	rm -f "$token_file"
	if [[ -d $cache_dir ]]; then
		find "$cache_dir" -mindepth 1 -delete
	fi
}
trap cleanup EXIT

mkdir -p "$config_dir" "$config_dir/templates.d"
mkdir -p "$cache_dir"
chmod 0700 "$cache_dir" # also when it already existed
(
	umask 077
	printf '%s' "$token" >"$token_file"
)
chmod 0600 "$token_file"

if [[ -n ${SHOELACE_AGENT_CONFIG:-} ]]; then
	install -m 0640 "$SHOELACE_AGENT_CONFIG" "$config_dir/agent.yaml"
else
	# The CA goes into the image with the config that names it: the VM made from the image
	# starts the agent with this config, and the file given may lie in an upload directory
	# (Packer's /tmp) that the VM does not have, nor the service (PrivateTmp).
	ca_file="$config_dir/ca.pem"
	if [[ -n ${SHOELACE_CA_FILE:-} && ! $SHOELACE_CA_FILE -ef $ca_file ]]; then
		install -m 0644 "$SHOELACE_CA_FILE" "$ca_file"
	fi
	{
		echo "# Written by the bake script; first-boot configuration may replace it."
		echo "server: \"$server\""
		if [[ -n ${SHOELACE_CA_FILE:-} ]]; then
			echo "ca_file: \"$ca_file\""
		fi
		echo "token_file: \"$token_file\""
		echo "appliance: \"$appliance\""
		echo "cache_dir: \"$cache_dir\""
		echo "templates_dir: \"$config_dir/templates.d\""
	} >"$config_dir/agent.yaml.tmp"
	chmod 0640 "$config_dir/agent.yaml.tmp"
	mv "$config_dir/agent.yaml.tmp" "$config_dir/agent.yaml"
fi

# 3. The system stage: files only, no reloads (nothing runs in an image build).
echo "bake: rendering the system stage of $appliance from $server" >&2
"$agent" once --config "$config_dir/agent.yaml" --stage system --no-commands

# 5. Enabled, waiting for its token.
if [[ ${SKIP_ENABLE:-} != 1 ]] && command -v systemctl >/dev/null; then
	systemctl enable shoelace-agent.service
fi
echo "bake: done; the token and the agent's cache are removed by the exit trap" >&2
