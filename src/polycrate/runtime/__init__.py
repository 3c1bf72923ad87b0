"""How one action executes: ``action`` (the request, its environment, the entry point), ``process``
(streaming and stopping a step's process group), ``ansible`` and ``script`` (the commands),
``container`` and ``toolchain`` (the container runtime), ``zygote`` (the warm Ansible a local run
forks from), ``ssh_masters`` (SSH connections shared across a run's steps)."""
