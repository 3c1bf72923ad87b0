"""Finding and loading a workspace: workspace.poly, inventory.yml and blocks/.

The result is one immutable ``Workspace`` whose blocks carry their merged
config (block defaults < workspace overrides, see ``merge.merge_config``).
"""
from __future__ import annotations

import os
from dataclasses import field
from pathlib import Path
from collections.abc import Iterable

from polycrate.errors import ConfigError, NotFoundError
from polycrate.config.merge import merge_config
from polycrate.config.refs import is_registry_reference, split_reference, version_key
from polycrate.config.model import KIND_DEFAULT, Action, Block, BlockDefinition, BlockEntry, Step, Workflow, Workspace
from polycrate.config.schema import (
    BLOCK_FILE,
    WORKSPACE_FILE,
    SecretsFile,
    WorkspaceFile,
    read_block_file,
    read_workspace_file,
)
from polycrate.config.yamlfile import regular_file
from polycrate.config.record import Record, record

BLOCKS_DIR = "blocks"
# folders under blocks/ never searched for block.poly
_SKIP_DIRS = {".git", "__pycache__", "node_modules", ".polycrate"}


def find_root(start: str | Path | None = None, explicit: bool = False) -> Path:
    """The workspace root: `start` itself when given with -w, else searched upward."""
    here = Path(start or os.getcwd()).resolve()
    if explicit:
        if not (here / WORKSPACE_FILE).is_file():
            raise ConfigError(f"no {WORKSPACE_FILE} in this folder", here)
        return here
    for folder in (here, *here.parents):
        if (folder / WORKSPACE_FILE).is_file():
            return folder
    raise ConfigError(f"no {WORKSPACE_FILE} found here or in any parent folder (use -w PATH)", here)


Stamp = tuple[int, int, int]  # (inode, mtime_ns, size) of a file read


def _stamp(path: Path) -> Stamp | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def discover_blocks(root: Path, known: dict[Path, tuple[Stamp, BlockDefinition]] | None = None,
                    blocks_root: str = BLOCKS_DIR) -> list[BlockDefinition]:
    """Every block.poly anywhere under blocks/ (or workspace.poly's `config.blocksroot`; registry-shaped
    paths included). A file in `known` whose stamp has not changed is not read again."""
    blocks_dir = root / blocks_root
    found: list[BlockDefinition] = []
    if not blocks_dir.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(blocks_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".polycrate-"))
        if BLOCK_FILE in filenames:
            file = Path(dirpath) / BLOCK_FILE
            seen = (known or {}).get(file)
            if seen is not None and seen[0] == _stamp(file):
                block = seen[1]
            else:
                block = read_block_file(file, blocks_dir)
            found.append(block)
            dirnames[:] = []  # a block's own subfolders hold its files, not other blocks
    return found


@record(frozen=True, eq=False, repr=False)
class Sources(Record):
    """The files a workspace is made of, each read and parsed once: workspace.poly and every
    installed block.poly. A run reads them once, decides what to install from them, and builds
    its Workspace from them."""

    root: Path
    document: WorkspaceFile  # workspace.poly, checked
    installed: tuple[BlockDefinition, ...]
    stamps: dict[Path, Stamp] = field(default_factory=dict, compare=False, repr=False)


def read_sources(root: Path, previous: Sources | None = None) -> Sources:
    """workspace.poly and the installed block.poly files. With `previous` (after installing blocks):
    workspace.poly is kept and only block.poly files that changed or are new are read."""
    if previous is not None:
        document = previous.document
        known = {b.file: (previous.stamps[b.file], b) for b in previous.installed if b.file in previous.stamps}
    else:
        document = read_workspace_file(root)
        known = {}
    installed = tuple(discover_blocks(root, known, document.go["layout"].blocks_root if document.go else BLOCKS_DIR))
    installed = tuple(_parent_in_full(b, document) for b in installed)
    stamps = {b.file: s for b in installed if (s := _stamp(b.file)) is not None}
    return Sources(root, document, installed, stamps)


def _parent_in_full(block: BlockDefinition, document: WorkspaceFile) -> BlockDefinition:
    """A block.poly's short `from:` (team/block:1.0) in full when a default registry is set."""
    from polycrate.config.hubref import is_short
    from polycrate.config.schema import registry_default

    if not block.parent or not is_short(block.parent):
        return block
    registry = registry_default(document.registries)()
    if not registry:
        return block
    import dataclasses

    return dataclasses.replace(block, parent=f"{registry}/{block.parent}")


def closest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' or '' — the one rule for suggesting names."""
    import difflib

    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def resolve_entry(entry: BlockEntry, installed: list[BlockDefinition], file: Path,
                  blocks_root: str = BLOCKS_DIR) -> BlockDefinition:
    """The installed block a workspace entry refers to, by `from:` or by name."""
    if entry.source:
        path, version = split_reference(entry.source)
        for block in installed:
            if block.relpath == path:
                if version and block.version != version:
                    raise ConfigError(
                        f"block '{entry.name}': workspace asks for {entry.source} but "
                        f"{blocks_root}/{block.relpath} is version {block.version} "
                        f"(run: polycrate blocks pull {entry.source})",
                        file,
                        entry.line,
                    )
                return block
        if "/" not in path:  # a plain block name used as `from:`
            by_name = [b for b in installed if b.name == path]
            if len(by_name) == 1:
                return by_name[0]
        raise ConfigError(
            f"block '{entry.name}': from '{entry.source}' matches no installed block under "
            f"{blocks_root}/{path} (run: polycrate blocks pull {entry.source})",
            file,
            entry.line,
        )
    by_name = [b for b in installed if b.name == entry.name]
    if len(by_name) == 1:
        return by_name[0]
    if not by_name:
        raise ConfigError(
            f"block '{entry.name}' is not installed under {blocks_root}/ and has no 'from'"
            + closest(entry.name, (b.name for b in installed)),
            file,
            entry.line,
        )
    paths = " and by ".join(f"{blocks_root}/{b.relpath}" for b in by_name)
    raise ConfigError(f"block '{entry.name}' is ambiguous: its name is taken by {paths} (add 'from: FOLDER' "
                      f"to the entry to pick one, e.g. from: {by_name[-1].relpath})", file, entry.line)


def _find_parent(child: BlockDefinition, installed: list[BlockDefinition]) -> BlockDefinition:
    """The installed block a block.poly's `from:` names (a registry reference or a block name)."""
    path, version = split_reference(child.parent or "")
    if "/" in path:
        for block in installed:
            if block.relpath == path:
                if version and block.version != version:
                    raise ConfigError(
                        f"block '{child.name}' inherits from {child.parent} but {BLOCKS_DIR}/{block.relpath} is "
                        f"version {block.version} (run: polycrate blocks pull {child.parent})",
                        child.file,
                        child.parent_line,
                    )
                return block
    else:
        by_name = [b for b in installed if b.name == path and b.file != child.file]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            paths = ", ".join(f"{BLOCKS_DIR}/{b.relpath}" for b in by_name)
            raise ConfigError(
                f"block '{child.name}': from '{child.parent}' is ambiguous ({paths}): use its registry path",
                child.file,
                child.parent_line,
            )
    hint = f" (run: polycrate blocks pull {child.parent})" if "/" in path else ""
    raise ConfigError(
        f"block '{child.name}': from '{child.parent}' matches no installed block{hint}", child.file, child.parent_line
    )


MAX_INHERITANCE_DEPTH = 16  # blocks inheriting from blocks: a real chain has two or three


def inherit(installed: list[BlockDefinition]) -> list[BlockDefinition]:
    """Blocks whose block.poly says `from:` filled from their parent: config merged with the one rule
    (parent < child), actions merged by name (the child's win whole, the parent's others are kept).
    An inherited ansible action keeps running the parent's playbook: its path is rewritten relative
    to the child's folder."""
    import dataclasses

    resolved: dict[Path, BlockDefinition] = {}

    def resolve(block: BlockDefinition, chain: tuple[Path, ...]) -> BlockDefinition:
        if block.file in resolved:
            return resolved[block.file]
        if not block.parent:
            resolved[block.file] = block
            return block
        if block.file in chain:
            names = " -> ".join(b.name for b in installed if b.file in chain)
            raise ConfigError(f"block inheritance loops ({names} -> {block.name})", block.file, block.parent_line)
        if len(chain) >= MAX_INHERITANCE_DEPTH:
            raise ConfigError(f"block '{block.name}' inherits through more than {MAX_INHERITANCE_DEPTH} levels of "
                              "`from:`; flatten the chain", block.file, block.parent_line)
        parent = resolve(_find_parent(block, installed), chain + (block.file,))
        actions = {}
        for name, action in parent.actions.items():
            if name in block.actions:
                continue
            if action.playbook:
                rel = os.path.relpath(parent.folder / action.playbook, block.folder)
                action = dataclasses.replace(action, playbook=rel)
            actions[name] = action
        actions.update(block.actions)
        kind = block.kind if block.kind != KIND_DEFAULT else parent.kind
        if parent.kind == "k8sapp":  # Polycrate: an instance of a Kubernetes app block
            kind = "k8sappinstance"
        merged = dataclasses.replace(
            block,
            config=merge_config(parent.config, block.config),
            actions=actions,
            kind=kind,
            description=block.description or parent.description,
            labels={**parent.labels, **block.labels},
            inventory=block.inventory or parent.inventory,
            kubeconfig=block.kubeconfig or parent.kubeconfig,
        )  # `template:` is not inherited: a block inheriting from a template is what the template is for
        resolved[block.file] = merged
        return merged

    return [resolve(b, ()) for b in installed]


@record(frozen=True, eq=False, repr=False)
class BlockChange(Record):
    """A `from:` block the workspace names that is missing, or installed at another version."""

    name: str  # the workspace entry (or the inheriting block) that needs it
    reference: str  # as written in `from:`
    installed: str | None  # installed version, None when missing
    wanted: str | None  # the reference's version tag, None for "the newest"
    file: Path | None = None  # where the reference is written
    line: int | None = None

    @property
    def kind(self) -> str:

        if self.installed is None:
            return "install"
        if self.wanted is None:
            return "keep"
        return "upgrade" if version_key(self.wanted) > version_key(self.installed) else "downgrade"

    def describe(self) -> str:
        if self.kind == "install":
            return f"block '{self.name}': from '{self.reference}' matches no installed block (install)"
        return f"block '{self.name}': {self.reference} is installed at version {self.installed} ({self.kind})"


def block_changes(sources: Sources) -> list[BlockChange]:
    """What `polycrate blocks pull` would have to install before this workspace can load: registry
    `from:` references of workspace.poly (and of installed blocks' block.poly) that are missing or
    installed at another version. Never talks to a registry."""

    file, entries = sources.document.file, sources.document.entries
    installed = {b.relpath: b for b in sources.installed}
    wanted = [(e.name, e.source, file, e.line) for e in entries.values() if e.source]
    wanted += [(b.name, b.parent, b.file, b.parent_line) for b in installed.values() if b.parent]
    changes: list[BlockChange] = []
    seen: set[str] = set()
    for name, source, where, line in wanted:
        assert source is not None
        if not is_registry_reference(source) or source in seen:
            continue
        seen.add(source)
        path, version = split_reference(source)
        block = installed.get(path)
        if block is None or (version and block.version != version):
            changes.append(BlockChange(name, source, block.version if block else None, version, where, line))
    return changes


def load_workspace(root: Path, sources: Sources | None = None) -> Workspace:
    """The Workspace of `root`, built from `sources` when the caller has read them already."""
    sources = sources or read_sources(root)
    document = sources.document
    file, entries = document.file, document.entries
    installed = inherit(list(sources.installed))

    blocks_root = document.go["layout"].blocks_root if document.go else BLOCKS_DIR
    blocks: dict[str, Block] = {}
    used: set[Path] = set()
    for entry in entries.values():
        if entry.actions and not entry.source and not any(b.name == entry.name for b in installed):
            definition = defined_in_workspace(entry, root, file, blocks_root)
        else:
            definition = completed_by_entry(resolve_entry(entry, installed, file, blocks_root), entry)
            used.add(definition.file)
        blocks[entry.name] = Block(
            name=entry.name,
            definition=definition,
            config=merge_config(definition.config, entry.config),
            source=entry.source,
            labels={**definition.labels, **entry.labels},
            configured=True,
            inventory=entry.inventory or definition.inventory,
            kubeconfig=entry.kubeconfig or definition.kubeconfig,
            entry_line=entry.line,
        )
    # installed blocks the workspace does not configure are usable with their defaults; two that share a
    # name would make the name mean whichever folder sorts first: refused (a `from:` entry picks one)
    unused: dict[str, BlockDefinition] = {}
    # (a template stays visible under its own name even when entries use it: to inspect it, and so that
    # running it is refused as a template's, not as an unknown block)
    for definition in installed:
        if definition.file in used and not definition.template:
            continue
        other = unused.get(definition.name)
        if other is None and definition.name in blocks:
            continue
        if other is not None:
            raise ConfigError(f"block name '{definition.name}' is taken twice: by blocks/{other.relpath} and by "
                              f"blocks/{definition.relpath} (rename one, remove the one not in use, or name "
                              f"one in workspace.poly with from: {definition.relpath})", definition.file)
        unused[definition.name] = definition
        blocks[definition.name] = Block(definition.name, definition, merge_config(definition.config, None),
                                        labels=dict(definition.labels), inventory=definition.inventory,
                                        kubeconfig=definition.kubeconfig)
    for block in blocks.values():
        for what, ref in (("inventory", block.inventory), ("kubeconfig", block.kubeconfig)):
            if ref is not None and ref.source is not None and ref.source not in blocks:
                raise ConfigError(f"block '{block.name}': {what} from '{ref.source}': no such block"
                                  + closest(ref.source, blocks), ref.file, ref.line)

    workflows: dict[str, Workflow] = document.workflows
    for workflow in workflows.values():
        for step in (*workflow.steps, *workflow.on_failure):
            step_block = blocks.get(step.block)
            if step_block is None:
                raise ConfigError(
                    f"workflow '{workflow.name}', step '{step.name}': unknown block '{step.block}'"
                    + closest(step.block, blocks),
                    file,
                    step.line,
                )
            if step.action not in step_block.actions:
                raise ConfigError(
                    f"workflow '{workflow.name}', step '{step.name}': block '{step.block}' has no action "
                    f"'{step.action}'" + closest(step.action, step_block.actions),
                    file,
                    step.line,
                )

    # inventory.yml is Ansible's to read, and only where hosts are needed (the preflight, runs): a fleet
    # inventory is legitimate input, not too large for `workflows list`. Here only what it is: a
    # FIFO, a device or a folder is refused without opening it.
    regular_file(root / document.inventory_file)

    warnings = list(document.go.get("warnings", ()))
    seen_files = {document.file}
    for block in blocks.values():
        if block.definition.file not in seen_files:
            seen_files.add(block.definition.file)
            warnings += block.definition.warnings
    return Workspace(
        name=document.name,
        organization=document.organization,
        description=document.description,
        root=root,
        file=file,
        blocks=blocks,
        workflows=workflows,
        config=document.config,
        run_settings=document.run_settings,
        registries=document.registries,
        recipients=document.recipients,
        toolchain=document.toolchain,
        labels=document.labels,
        dependencies=document.dependencies,
        inventory_file=document.inventory_file,
        kubeconfig_file=document.kubeconfig_file,
        **{k: v for k, v in document.go.items() if k != "warnings"},
        warnings=tuple(warnings),
    )


def defined_in_workspace(entry: BlockEntry, root: Path, file: Path, blocks_root: str) -> BlockDefinition:
    """A block workspace.poly defines with its `actions:` (Polycrate's dynamic block): its folder is
    <blocksroot>/<name> when that exists (its playbooks and files), else the workspace root."""
    folder = root / blocks_root / entry.name
    folder = folder if folder.is_dir() else root
    return BlockDefinition(
        name=entry.name, version=entry.version or "0.0.0", kind=entry.kind or KIND_DEFAULT,
        description=entry.description, config={}, actions=dict(entry.actions), folder=folder, file=file,
        relpath=entry.name, template=bool(entry.template), labels={}, alias=entry.alias, type=entry.type,
        flavor=entry.flavor,
    )


def completed_by_entry(definition: BlockDefinition, entry: BlockEntry) -> BlockDefinition:
    """An installed block with what its workspace.poly entry adds (Polycrate merges the entry over it):
    the entry's actions by name over the block's, its kind, version, description, template."""
    import dataclasses

    if not (entry.actions or entry.kind or entry.version or entry.description or entry.template is not None
            or entry.alias or entry.type or entry.flavor):
        return definition
    return dataclasses.replace(
        definition,
        actions={**definition.actions, **entry.actions},
        kind=entry.kind or definition.kind,
        version=entry.version or definition.version,
        description=entry.description or definition.description,
        template=definition.template if entry.template is None else entry.template,
        alias=entry.alias or definition.alias,
        type=entry.type or definition.type,
        flavor=entry.flavor or definition.flavor,
    )


def with_secret_values(ws: Workspace, secrets: SecretsFile | None) -> Workspace:
    """secrets.poly merged over workspace.poly with the one merge rule: its top-level `config`
    over the workspace's, and each of its `blocks` entries over the config of the block of that name."""
    if secrets is None:
        return ws
    from dataclasses import replace

    blocks = dict(ws.blocks)
    for entry in secrets.blocks:
        if entry.name not in blocks:
            raise ConfigError(
                f"secrets.poly names block {entry.name!r}, which the workspace does not have"
                + closest(entry.name, blocks),
                secrets.file, entry.line,
            )
        block = blocks[entry.name]
        blocks[entry.name] = replace(block, config=merge_config(block.config, entry.config))
    return replace(ws, blocks=blocks, config=merge_config(ws.config, secrets.config))


def template_refusal(ws: Workspace, block: str, workflow: Workflow | None = None, step: Step | None = None
                     ) -> ConfigError | None:
    """The error for running a template block (`template: true`), alone or as a workflow's step; None
    when `block` is not one. A template is only inherited from: a workspace.poly entry with `from:` runs it."""
    found = ws.blocks.get(block)
    if found is None or not found.template:
        return None
    definition = found.definition
    declared = f"{definition.file.relative_to(ws.root)}:{definition.template_line or 1}"
    reason = (f"block '{block}' is a template (template: true, {declared}): only other blocks inherit from it, "
              f"so it does not run; nothing was run (run an instance: a workspace.poly block entry with "
              f"from: {definition.relpath})")
    if workflow is not None and step is not None:
        return ConfigError(f"workflow '{workflow.name}', step '{step.name}': {reason}", ws.file, step.line)
    return ConfigError(reason, definition.file, definition.template_line)


def get_block(ws: Workspace, name: str) -> Block:
    block = ws.blocks.get(name)
    if block is None:
        raise NotFoundError(f"unknown block '{name}'" + closest(name, ws.blocks), ws.file)
    return block


def get_action(block: Block, name: str) -> Action:
    action = block.actions.get(name)
    if action is None:
        raise NotFoundError(
            f"block '{block.name}' has no action '{name}'" + closest(name, block.actions), block.definition.file
        )
    return action


def get_workflow(ws: Workspace, name: str) -> Workflow:
    workflow = ws.workflows.get(name)
    if workflow is None and name in ws.blocks:  # `polycrate run BLOCK`: the action is missing, not the workflow
        actions = list(ws.blocks[name].actions)
        shown = ", ".join(actions[:10]) + (f" (+{len(actions) - 10})" if len(actions) > 10 else "")
        raise NotFoundError(f"'{name}' is a block, not a workflow: name one of its actions, as in "
                            f"polycrate run {name} {actions[0] if actions else 'ACTION'}"
                            + (f" (its actions: {shown})" if actions else " (it has no actions)"), ws.file)
    if workflow is None:
        raise NotFoundError(f"unknown workflow '{name}'" + closest(name, ws.workflows), ws.file)
    if not workflow.steps:  # loads (as in Polycrate), so the rest of the workspace works; this one cannot run
        raise ConfigError(f"workflow '{name}' has no steps: add steps: [{{name, block, action}}]", ws.file,
                          workflow.line)
    return workflow
