#!/usr/bin/env bash
# Make sure bubblewrap (bwrap), the training process's sandbox (worker/sandbox/confine.py), is
# here and can build its namespaces: the sandbox tests run real sandboxes and are never skipped.
# When bwrap is missing and this runs as root with apt-get, it installs the bubblewrap package
# (updating the package lists if the first try fails); otherwise it fails and says what to do.
set -euo pipefail

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null
}

if ! command -v bwrap >/dev/null && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "Installing bubblewrap (apt-get) for the training sandbox"
  apt_install || { apt-get update -q >/dev/null && apt_install; } || true
fi
if ! command -v bwrap >/dev/null; then
  echo "error: the tests need bubblewrap (bwrap), the training processes' sandbox." >&2
  echo "  Install it (Debian/Ubuntu, as root: apt-get install bubblewrap) and rerun." >&2
  exit 1
fi
if ! bwrap --unshare-all --uid 65534 --gid 65534 --ro-bind / / --proc /proc -- true; then
  echo "error: bwrap is installed but cannot create its namespaces on this machine." >&2
  echo "  Enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1;" >&2
  echo "  on Ubuntu 24.04+ also kernel.apparmor_restrict_unprivileged_userns=0), and in a" >&2
  echo "  container allow them in its seccomp profile (docs/deploy.md)." >&2
  exit 1
fi
