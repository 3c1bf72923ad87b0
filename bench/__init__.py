"""polycrate's benchmarks (issue 9): `make bench` or `python -m bench [cli orchestration fleet backup]`.

Each benchmark measures its baseline in the same run, interleaving the variants, and reports medians
and ratios; `bench/README.md` is written from `bench/results.json`. Nothing here is a test.
"""

import os as _os

# The benchmarks measure polycrate against plain Ansible on this machine: the local runtime, said once
# for every polycrate they start (the container is the default runtime; see docs/how-to/container-toolchain.md).
_os.environ["POLYCRATE_RUNTIME"] = "local"
