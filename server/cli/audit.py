"""`fedvault audit`: verify, query, export and prove the audit log, from the shell."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedvault.common.errors import IntegrityError
from fedvault.common.files import atomic_writer
from fedvault.server.audit.export import FORMATS, export_events
from fedvault.server.audit.proofs import prove_consistency, prove_inclusion, signed_checkpoint
from fedvault.server.audit.query import EventFilter, query_events
from fedvault.server.audit.service import audited_local_action, public_key_of
from fedvault.server.audit.signing import Checkpoint
from fedvault.server.audit.verify import verify_log
from fedvault.server.cli._common import (
    Action,
    Actor,
    DatabaseUrl,
    DataDir,
    OutcomeOpt,
    Project,
    PublicKeyFile,
    Resource,
    ResourceType,
    Since,
    Until,
    console,
    err_console,
    load_public_key,
    read_engine,
    settings,
)
from fedvault.server.cli.audit_report import report_app
from fedvault.server.core.settings import DEFAULT_DATA_DIR

__all__ = ["audit_app"]

audit_app = typer.Typer(
    help="The tamper-evident audit log: verify it, query and export events, prove inclusion.",
    no_args_is_help=True,
)
audit_app.add_typer(report_app, name="report")


@audit_app.command()
def verify(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    public_key: PublicKeyFile = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="A checkpoint saved earlier (`fedvault audit checkpoint`): the log must "
            "still contain it, which reveals truncation even with newer checkpoints gone."
        ),
    ] = None,
) -> None:
    """Recompute the hash chain and check every signed checkpoint; works on a copy, offline.

    Copy a live SQLite database whole: `sqlite3 fedvault.db ".backup copy.db"` (or the file
    with its -wal file beside it).
    """
    key = load_public_key(public_key, data_dir)
    trusted = Checkpoint.from_note(checkpoint.read_text()) if checkpoint else None
    engine = read_engine(data_dir, database_url)
    try:
        report = verify_log(engine, key, trusted=trusted)
    finally:
        engine.dispose()
    if not report.ok:
        where = []
        if report.first_bad_event is not None:
            where.append(f"first bad event: {report.first_bad_event}")
        if report.failed_checkpoint is not None:
            where.append(f"failed checkpoint: {report.failed_checkpoint} events")
        err_console.print(f"Checked {report.events} events before the problem; {', '.join(where)}")
        raise IntegrityError(f"The audit log was tampered with: {report.problem}")
    console.print(
        f"[green]Audit log intact:[/] {report.events} events, {report.checkpoints} signed "
        f"checkpoint(s) by key {key.key_id.hex()}; signed through event {report.signed_size}."
    )
    if report.unsigned:
        console.print(
            f"[yellow]{report.unsigned} newest event(s) are not yet under a checkpoint[/]; "
            "the next one covers them."
        )


def _filter(**values: Any) -> EventFilter:
    return EventFilter.parse(
        actor=values["actor"],
        action=values["action"],
        resource_type=values["resource_type"],
        resource_id=values["resource"],
        project=values["project"],
        outcome=values["outcome"],
        since=values["since"],
        until=values["until"],
    )


@audit_app.command()
def query(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    actor: Actor = None,
    action: Action = None,
    resource_type: ResourceType = None,
    resource: Resource = None,
    project: Project = None,
    outcome: OutcomeOpt = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, typer.Option(help="Events per page (1-1000).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Continue after a previous page.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """One page of matching events, oldest first, with the cursor for the next page."""
    flt = _filter(**locals())
    engine = read_engine(data_dir, database_url)
    try:
        page = query_events(engine, flt, cursor=cursor, limit=limit)
    finally:
        engine.dispose()
    if as_json:
        console.print_json(json.dumps({"events": page.events, "next_cursor": page.next_cursor}))
        return
    table = Table()
    for name in ("seq", "time (UTC)", "actor", "action", "resource", "outcome", "details"):
        table.add_column(name, overflow="fold")
    for e in page.events:
        table.add_row(
            str(e["seq"]),
            e["time"][:19].replace("T", " "),
            f"{e['actor']} ({e['actor_type']})",
            e["action"],
            f"{e['resource_type']}:{e['resource_id']}",
            e["outcome"],
            json.dumps(e["details"], ensure_ascii=False)[:80],
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"More: --cursor {page.next_cursor}")


@audit_app.command()
def export(
    fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    actor: Actor = None,
    action: Action = None,
    resource_type: ResourceType = None,
    resource: Resource = None,
    project: Project = None,
    outcome: OutcomeOpt = None,
    since: Since = None,
    until: Until = None,
) -> None:
    """Stream matching events as JSON lines or CSV; the export itself is audited first."""
    flt = _filter(**locals())
    engine = read_engine(data_dir, database_url)
    chunks = export_events(engine, flt, fmt=fmt)
    wanted = {k: v for k, v in vars(flt).items() if v is not None}
    details = {"format": fmt, "filter": {k: str(v) for k, v in wanted.items()}}
    details["to"] = "file" if output else "stdout"
    try:
        with audited_local_action(
            settings(data_dir, database_url),
            action="audit.export",
            resource_type="audit-log",
            resource_id="events",
            details=details,
        ):
            if output is None:
                for chunk in chunks:
                    sys.stdout.write(chunk)
                sys.stdout.flush()
            else:
                with atomic_writer(output, mode=0o600) as fh:
                    for chunk in chunks:
                        fh.write(chunk.encode("utf-8"))
                err_console.print(f"Wrote [cyan]{output}[/].")
    finally:
        engine.dispose()


@audit_app.command()
def prove(
    seq: Annotated[int, typer.Argument(help="Sequence number of the event.")],
    tree_size: Annotated[
        int | None, typer.Option(help="Prove against this checkpoint (default: newest).")
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    public_key: PublicKeyFile = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the proof as JSON.")] = False,
) -> None:
    """Inclusion proof: the event's Merkle audit path to a signed checkpoint (RFC 9162)."""
    key = load_public_key(public_key, data_dir)
    engine = read_engine(data_dir, database_url)
    try:
        proof = prove_inclusion(engine, key, seq, tree_size=tree_size)
    finally:
        engine.dispose()
    if as_json:
        document = {
            "seq": proof.seq,
            "leaf_index": proof.seq - 1,
            "tree_size": proof.checkpoint.tree_size,
            "event": json.loads(proof.event_json),
            "event_json": proof.event_json,
            "prev_hash": proof.prev_hash.hex(),
            "leaf_hash": proof.leaf.hex(),
            "path": [p.hex() for p in proof.path],
            "root": proof.checkpoint.root.hex(),
            "checkpoint": proof.checkpoint.to_note(),
        }
        console.print_json(json.dumps(document))
        return
    console.print(
        f"[green]Event {seq} is in the log[/] signed at {proof.checkpoint.tree_size} events "
        f"(root {proof.checkpoint.root.hex()}), by an audit path of {len(proof.path)} hashes; "
        f"checked with key {key.key_id.hex()}."
    )


@audit_app.command()
def consistency(
    first: Annotated[int, typer.Argument(help="Size of the older checkpoint.")],
    second: Annotated[
        int | None, typer.Argument(help="Size of the newer checkpoint (default: newest).")
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    public_key: PublicKeyFile = None,
) -> None:
    """Consistency proof: the newer checkpoint's log extends the older one unchanged."""
    key = load_public_key(public_key, data_dir)
    engine = read_engine(data_dir, database_url)
    try:
        proof = prove_consistency(engine, key, first, second)
    finally:
        engine.dispose()
    console.print(
        f"[green]Consistent:[/] the log at {proof.second.tree_size} events extends the log at "
        f"{proof.first.tree_size} events ({len(proof.path)} hashes); checked with key "
        f"{key.key_id.hex()}."
    )


@audit_app.command("checkpoint")
def show_checkpoint(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    public_key: PublicKeyFile = None,
) -> None:
    """Print the newest signed checkpoint; keep it to detect truncation later (--checkpoint)."""
    key = load_public_key(public_key, data_dir)
    engine = read_engine(data_dir, database_url)
    try:
        newest = signed_checkpoint(engine, key)
    finally:
        engine.dispose()
    sys.stdout.write(newest.to_note())


@audit_app.command("public-key")
def public_key_cmd(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    vkey: Annotated[bool, typer.Option("--vkey", help="C2SP verifier key instead of PEM.")] = False,
) -> None:
    """Print the public key that checks checkpoint signatures; give it to your auditors."""
    key = public_key_of(data_dir)
    sys.stdout.write(key.to_vkey() + "\n" if vkey else key.to_pem())
