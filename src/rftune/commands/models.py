"""``rftune models list|show|diff|tag|rm|export|import|verify``: the model repository of trained versions.

``verify`` re-hashes every stored file of one version (or of all) and exits 1 when any is missing or damaged.

Versions are named ``NAME@V``; ``NAME@TAG`` and ``NAME@latest`` work wherever a version is asked for (and wherever
a model or adapter path is: ``model.adapter``, ``rftune eval --adapter``, ``rftune serve``, ``rftune play``).
"""

from __future__ import annotations

import argparse
import json

import yaml

HELP = "The model repository: list, show, diff, tag, remove, export, import and verify trained versions."


def add_arguments(parser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repository", metavar="PATH",
                        help="repository folder (default $RFTUNE_REPOSITORY, else <rftune cache>/repository)")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", parents=[common], help="a table of every version")
    show = sub.add_parser("show", parents=[common], help="everything recorded about a version, and its lineage")
    show.add_argument("ref", help="NAME@V, NAME@TAG or NAME@latest")
    show.add_argument("--json", action="store_true", help="print the record as JSON")
    diff = sub.add_parser("diff", parents=[common], help="config and metric differences between two versions")
    diff.add_argument("a")
    diff.add_argument("b")
    tag = sub.add_parser("tag", parents=[common], help="give a version a tag (moved if another version has it)")
    tag.add_argument("ref")
    tag.add_argument("tag", help="e.g. best")
    rm = sub.add_parser("rm", parents=[common], help="remove a version (refused while another derives from it)")
    rm.add_argument("ref")
    rm.add_argument("--force", action="store_true", help="remove it even if other versions derive from it")
    export = sub.add_parser("export", parents=[common], help="write a Hugging Face folder with a model card")
    export.add_argument("ref")
    export.add_argument("dir", help="new folder to write")
    export.add_argument("--merged", action="store_true", help="merge the adapter into full weights")
    imp = sub.add_parser("import", parents=[common], help="register a PEFT adapter or transformers model folder")
    imp.add_argument("dir")
    imp.add_argument("--name", help="version name (default: the exported record's name, else the folder's name)")
    verify = sub.add_parser("verify", parents=[common], help="check every stored file against its sha256")
    verify.add_argument("ref", nargs="?", help="NAME@V, NAME@TAG or NAME@latest (default: every version)")


def run(args) -> int:
    from rftune.repository import open_repository

    repository = open_repository(args.repository)
    return ACTIONS[args.action](repository, args)


def _list(repository, args) -> int:
    versions = repository.versions()
    if not versions:
        print(f"no versions in {repository.root}")
        return 0
    refs = {v.id: v.ref for v in versions}
    rows = [("version", "stage", "base", "parent", "created", "eval", "status")]
    for v in versions:
        tags = repository.tags(v)
        rows.append((v.ref + (f" [{', '.join(tags)}]" if tags else ""), v.info.get("stage", "?"),
                     v.info.get("base_model", {}).get("name", "?"), _parent(v, refs),
                     v.created_at.replace("T", " ")[:19], _latest_figure(repository.evals(v)), _status(repository, v)))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _parent(version, refs: dict[int, str]) -> str:
    if version.parent_id is not None:
        return refs.get(version.parent_id, "?")
    recorded = version.info.get("parent_ref")
    return f"({recorded}, removed)" if recorded else "-"


def _status(repository, version) -> str:
    problems = repository.problems(version)
    return f"BROKEN: {problems}" if problems else "ok"


def _show(repository, args) -> int:
    from rftune.repository.export import eval_figure

    version = repository.resolve(args.ref)
    lineage = repository.lineage(version)
    evals = repository.evals(version)
    if args.json:
        record = {"ref": version.ref, "kind": version.kind, "tags": repository.tags(version),
                  "status": _status(repository, version), "lineage": [v.ref for v in lineage],
                  "created_at": version.created_at, "files": version.manifest, "evals": evals, **version.info}
        print(json.dumps(record, indent=1, sort_keys=True, default=str))
        return 0
    info = version.info
    base = info.get("base_model", {})
    tags = repository.tags(version)
    print(f"{version.ref}  ({version.kind}, {info.get('stage', '?')} stage)" + (f"  tags: {', '.join(tags)}"
                                                                               if tags else ""))
    _field("status", _status(repository, version))
    _field("lineage", " <- ".join(f"{v.ref} ({v.info.get('stage', '?')})" for v in lineage)
           + f" <- base {base.get('name')}")
    if info.get("recorded_lineage"):
        _field("imported", f"from {info.get('imported_from')}; lineage there: {' <- '.join(info['recorded_lineage'])}")
    _field("base model", f"{base.get('name')} (weights sha256 {base.get('sha256')})")
    _field("created", version.created_at)
    _field("trained", f"{info.get('started_at', '?')} .. {info.get('finished_at', '?')}")
    _field("run folder", info.get("run_dir", "-"))
    data = info.get("data") or {}
    _field("data", f"{data.get('source')} ({data.get('rows')} rows, sha256 {data.get('sha256')})" if data else "-")
    for reward in info.get("rewards") or []:
        _field("reward", f"{reward['name']} (weight {reward['weight']}, {reward.get('function')}, "
                         f"source sha256 {reward.get('source_sha256')})")
    metrics = info.get("metrics") or {}
    _field("metrics", ", ".join(f"{k} {_number(v)}" for k, v in sorted(metrics.items())) or "-")
    for result in evals:
        _field("eval", f"{result['created_at']}: {eval_figure(result)} ({result.get('report')})")
    for rel, entry in sorted(version.manifest.items()):
        _field("file", f"{rel} ({entry['size']} bytes, sha256 {entry['sha256'][:16]})")
    if info.get("config"):
        print("config:")
        print("  " + yaml.safe_dump(info["config"], sort_keys=True).rstrip().replace("\n", "\n  "))
    return 0


def _field(label: str, text) -> None:
    print(f"{label + ':':<12}{text}")


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _diff(repository, args) -> int:
    a, b = repository.resolve(args.a), repository.resolve(args.b)
    print(f"{a.ref} -> {b.ref}")
    config_a, config_b = _flatten(a.info.get("config") or {}), _flatten(b.info.get("config") or {})
    changed = [k for k in sorted(set(config_a) | set(config_b)) if config_a.get(k) != config_b.get(k)]
    print("config:" + ("" if changed else " identical"))
    for key in changed:
        print(f"  {key}: {config_a.get(key, '(unset)')!r} -> {config_b.get(key, '(unset)')!r}")
    metrics_a, metrics_b = a.info.get("metrics") or {}, b.info.get("metrics") or {}
    changed = [k for k in sorted(set(metrics_a) | set(metrics_b)) if metrics_a.get(k) != metrics_b.get(k)]
    print("final metrics:" + ("" if changed else " identical"))
    for key in changed:
        va, vb = metrics_a.get(key), metrics_b.get(key)
        delta = f"  ({vb - va:+.4g})" if _numeric(va) and _numeric(vb) else ""
        print(f"  {key}: {_number(va)} -> {_number(vb)}{delta}")
    evals_a, evals_b = repository.evals(a), repository.evals(b)
    if evals_a or evals_b:
        print(f"eval: {_latest_figure(evals_a)} -> {_latest_figure(evals_b)}")
    return 0


def _latest_figure(evals: list[dict]) -> str:
    from rftune.repository.export import eval_figure

    return eval_figure(evals[-1]) if evals else "-"


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tag(repository, args) -> int:
    version = repository.resolve(args.ref)
    repository.tag(version, args.tag)
    print(f"{version.name}@{args.tag} -> {version.ref}")
    return 0


def _rm(repository, args) -> int:
    version = repository.resolve(args.ref)
    orphans = repository.remove(version, force=args.force)
    print(f"removed {version.ref}" + (f" (parent of {', '.join(v.ref for v in orphans)})" if orphans else ""))
    return 0


def _export(repository, args) -> int:
    from rftune.repository.export import export_version

    version = repository.resolve(args.ref)
    folder = export_version(repository, version, args.dir, merged=args.merged)
    merged = args.merged and version.kind == "adapter"
    print(f"exported {version.ref} to {folder}" + (" (adapter merged into full weights)" if merged else ""))
    return 0


def _import(repository, args) -> int:
    from rftune.repository.export import import_folder

    version = import_folder(repository, args.dir, args.name)
    print(f"registered {version.ref}")
    return 0


def _verify(repository, args) -> int:
    versions = [repository.resolve(args.ref)] if args.ref else repository.versions()
    broken = 0
    for version in versions:
        status = _status(repository, version)
        broken += status != "ok"
        print(f"{version.ref}: {status}")
    print(f"{len(versions) - broken} of {len(versions)} version(s) verified" + (f", {broken} broken" if broken else ""))
    return 1 if broken else 0


ACTIONS = {"list": _list, "show": _show, "diff": _diff, "tag": _tag, "rm": _rm, "export": _export,
           "import": _import, "verify": _verify}
