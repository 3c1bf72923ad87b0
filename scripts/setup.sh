#!/usr/bin/env bash
# Installs polycrate from this clone on Debian bookworm: the Debian packages that are missing, then a
# virtualenv in .venv with polycrate installed editable. What it installs depends on what it is for:
#
#   scripts/setup.sh            polycrate itself: run it, with the container runtime (the default one)
#   scripts/setup.sh --demo     + what `make demo` needs: the Debian test hosts (systemd in podman), S3 (moto)
#   scripts/setup.sh --test     + what `make test` needs: the demo's, plus a browser, an OCI registry, shells,
#                                 kubectl, the age CLI, and the test and docs Python packages
#   scripts/setup.sh --docs     + the Python packages of `make docs` (MkDocs, Material)
#   --list                      print the Debian and Python packages the options above choose, install nothing
#
# The lists below are the one place each package is named; tests/unit/test_setup_script.py reads them
# (through --list) to show that the default installs no browser, registry or database server.
# Adding a package: put it in the list of the narrowest purpose that needs it, with a comment saying why.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- Debian packages, by purpose ------------------------------------------------------------------
# polycrate itself (every purpose)
RUN_PACKAGES=(
  python3-venv                    # the virtualenv polycrate is installed into
  openssh-client                  # Ansible's SSH connections, `polycrate ssh`
  git                             # `polycrate git ...`, --auto-commit
)
# the container runtime, the default one (`config.runtime: container`; `--local` does without)
CONTAINER_PACKAGES=(
  podman runc catatonit uidmap slirp4netns fuse-overlayfs   # the engine (docker works too, if installed)
  debootstrap zstd                # `polycrate toolchain build --base`: the base image and its cached tarball
)
# `make demo`: the article's nightly workflow against local Debian test hosts (tests/fleet/)
DEMO_PACKAGES=(
  containernetworking-plugins     # the test hosts (systemd in podman): their podman network, SSH published on 127.0.0.N
  openssh-server                  # sshd of the test hosts on 127.0.0.N
  postgresql postgresql-client    # the database the backup dumps
  rclone                          # uploads the backup to S3 (moto on loopback)
  isal                            # igzip: the backup archive's compressor
  dpkg-dev                        # the test host's own apt repository (acme-app 1.0.0 -> 1.1.0)
  curl
)
# `make test`: the demo's packages and these
TEST_PACKAGES=(
  age                             # the age CLI, to prove our encrypted files are standard age
  docker-registry                 # a real OCI registry on loopback for the block push/pull tests
  docker.io                       # a real Docker engine: the container tests start their own dockerd
  zsh fish                        # the completion scripts are checked by the shells themselves
  chromium chromium-driver        # the browser tests of `polycrate serve` (Selenium drives Debian's chromedriver)
)

# --- Python packages, by purpose (installed into .venv) -------------------------------------------
PIP_RUN=(-e '.[web]')                      # polycrate and its web view (`polycrate serve`)
PIP_DEMO=(-r requirements/demo.txt)        # moto's S3 server
PIP_TEST=(-r requirements/test.txt)        # pytest, selenium, build, ... and the demo's and docs' (not a published extra)
PIP_DOCS=(-r requirements/docs.txt)        # mkdocs, mkdocs-material

demo=0 test=0 docs=0 list=0
for arg in "$@"; do
  case $arg in
    --demo) demo=1 ;;
    --test) test=1 demo=1 docs=1 ;;      # the tests run the demo's hosts and build the docs (--strict)
    --docs) docs=1 ;;
    --list) list=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

apt_packages=("${RUN_PACKAGES[@]}" "${CONTAINER_PACKAGES[@]}")
pip_args=("${PIP_RUN[@]}")
if ((demo)); then
  apt_packages+=("${DEMO_PACKAGES[@]}")
  pip_args+=("${PIP_DEMO[@]}")
fi
if ((test)); then
  apt_packages+=("${TEST_PACKAGES[@]}")
  # kubectl for the tests of `polycrate k`: Debian's kubernetes-client, unless a kubectl is there already
  command -v kubectl >/dev/null || apt_packages+=(kubernetes-client)
  pip_args+=("${PIP_TEST[@]}")
fi
((docs)) && pip_args+=("${PIP_DOCS[@]}")

if ((list)); then
  printf 'apt %s\n' "${apt_packages[@]}"
  printf 'pip %s\n' "${pip_args[@]}"
  exit 0
fi

say() { echo "setup: $*" >&2; }

# --- Debian packages: only those missing ----------------------------------------------------------
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  say "apt-get update"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  say "Debian packages installed"
else
  say "Debian packages: all ${#apt_packages[@]} present"
fi

# --- podman inside a container without systemd (the demo and test machines, CI) -------------------
# runc, and no default ulimits it may not raise. Only for --demo/--test: on an admin's host podman's own
# configuration is the admin's (docs/how-to/container-toolchain.md says when this drop-in is needed).
# Written once: an admin's own edits of it are kept.
podman_conf=/etc/containers/containers.conf.d/50-polycrate.conf
if ((demo)) && [[ ! -f $podman_conf ]]; then
  say "writing $podman_conf (runc, no default ulimits: podman in a container without systemd)"
  mkdir -p "$(dirname "$podman_conf")"
  printf '%s\n' '# written by polycrate scripts/setup.sh' '[containers]' 'default_ulimits = []' \
    '[engine]' 'runtime = "runc"' >"$podman_conf"
fi

# --- the virtualenv -------------------------------------------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
  say "creating the virtualenv .venv"
  python3 -m venv .venv
fi
# one stamp per purpose: installing again only when pyproject.toml or a requirements file changed
profile=run
((demo)) && profile=demo
((docs)) && profile=$profile-docs
((test)) && profile=test
stamp=.venv/.polycrate-installed-$profile
newer=$(find pyproject.toml requirements -newer "$stamp" 2>/dev/null | head -1 || true)
if [[ ! -f $stamp || -n $newer ]]; then
  say "pip install ${pip_args[*]} (into .venv; a minute the first time)"
  .venv/bin/pip install -q --disable-pip-version-check "${pip_args[@]}" 2>&1 | grep -v '^WARNING: Location' || true
  # fail loudly if the install did not work
  .venv/bin/python -c 'import polycrate, ansible, ahocorasick, starlette, uvicorn, jinja2'
  if ((demo)); then .venv/bin/python -c 'import moto'; fi
  if ((test)); then .venv/bin/python -c 'import pytest, selenium, build'; fi
  if ((docs)); then .venv/bin/python -c 'import mkdocs, material'; fi
  touch "$stamp"
  say "done: .venv/bin/polycrate $(.venv/bin/polycrate version | head -1 | cut -d' ' -f2)"
else
  say "Python packages: up to date (.venv)"
fi
