#!/usr/bin/env bash
# Installs what polycrate's demo, tests and benchmarks need on a fresh Debian bookworm machine:
# Debian packages (only those missing) and a virtualenv in .venv with polycrate installed editable.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  openssh-server openssh-client   # SSH test hosts on loopback
  postgresql postgresql-client    # real PostgreSQL for backup tests
  age                             # the age CLI, to prove our files are standard age
  rclone                          # uploads to S3
  isal                            # igzip: the backup archive's compressor (the block's unit tests use it)
  debootstrap zstd dpkg-dev       # the isolated Debian test host and its apt repository
  podman runc catatonit uidmap slirp4netns fuse-overlayfs   # the container runtime (see README: Runtimes)
  docker-registry                 # a real OCI registry on loopback for the block push/pull tests
  docker.io                       # a real Docker engine: the container tests start their own dockerd
  zsh fish                        # the completion scripts are checked by the shells themselves
  chromium chromium-driver        # the browser tests of `polycrate serve` (Selenium drives Debian's chromedriver)
  python3-venv git curl
)

# kubectl for `polycrate k`: Debian's kubernetes-client, unless a kubectl (another package's) is there already
command -v kubectl >/dev/null || APT_PACKAGES+=(kubernetes-client)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# podman on this kind of machine (containers in containers, no systemd): runc, and no default ulimits
# it may not raise. A drop-in, written once: an admin's own edits of it are kept.
podman_conf=/etc/containers/containers.conf.d/50-polycrate.conf
if [[ ! -f $podman_conf ]]; then
  mkdir -p "$(dirname "$podman_conf")"
  printf '%s\n' '# written by polycrate scripts/setup.sh' '[containers]' 'default_ulimits = []' \
    '[engine]' 'runtime = "runc"' >"$podman_conf"
fi

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
stamp=.venv/.polycrate-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test,web]' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import polycrate, ansible, ahocorasick, starlette, uvicorn, jinja2, selenium' # fail loudly if the install did not work
  touch "$stamp"
fi
