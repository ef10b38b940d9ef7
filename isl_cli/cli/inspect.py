"""`isl inspect FILE`: what an artifact holds, read from its header alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from isl_cli.cli.common import JsonOpt, console, emit, field_table


def inspect(
    file: Annotated[Path, typer.Argument(help="An isl artifact (.safetensors).", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Describe an artifact: kind, tensors (name, shape, dtype), metadata and config, and check both its digests
    (metadata and tensors, read one tensor at a time): a file that fails one is still shown, then refused with one
    line (exit 2).
    """
    from isl_cli.artifacts import dtype_name, read_header, refuse_corrupt, verify_file

    header = read_header(file, verify=False)  # shown even when corrupt; the digests are checked below
    verified = verify_file(file)
    tensors = [
        {"name": t.name, "shape": list(t.shape), "dtype": dtype_name(t.dtype)}
        for t in sorted(header.tensors.values(), key=lambda t: t.name)
    ]
    if as_json:
        record = {
            "path": str(header.path),
            "kind": header.kind,
            "schema": header.schema,
            "version": header.version,
            "fingerprint": header.fingerprint,
            "tensors": tensors,
            "meta": header.meta,
            "config": header.config,
            "digest": header.raw_metadata.get("isl.digest"),
            "meta_digest": header.raw_metadata.get("isl.meta_digest"),
            "verified": verified,
        }
        emit(json.dumps(record, indent=2, sort_keys=True))
        refuse_corrupt(header.path, verified)
        return

    summary = field_table(f"{header.path}")
    summary.add_row("kind", header.kind)
    summary.add_row("schema", str(header.schema))
    summary.add_row("written by", f"isl {header.version}")
    summary.add_row("fingerprint", header.fingerprint or "(none)")
    summary.add_row("digest", _digest_row(header.raw_metadata.get("isl.digest"), verified["tensors"],
                                          "written before isl recorded digests"))
    summary.add_row("meta digest", _digest_row(header.raw_metadata.get("isl.meta_digest"), verified["metadata"],
                                               "written before isl covered the metadata"))
    for key, value in sorted(header.meta.items()):
        summary.add_row(f"meta.{key}", _short(value))
    console.print(summary)
    stats = header.meta.get("stats") if header.kind == "neighbors" else None
    if isinstance(stats, dict):
        _mining_table(stats)

    shown = tensors if len(tensors) <= 40 else tensors[:40]
    table = Table(title=f"tensors ({len(tensors)})", title_justify="left")
    table.add_column("name")
    table.add_column("shape", justify="right")
    table.add_column("dtype")
    for t in shown:
        table.add_row(t["name"], " x ".join(map(str, t["shape"])) or "scalar", t["dtype"])
    if len(tensors) > len(shown):
        table.add_row(f"... {len(tensors) - len(shown)} more (use --json)", "", "")
    console.print(table)

    if header.config:
        config = field_table("config")
        for key, value in sorted(header.config.items()):
            config.add_row(key, _short(value))
        console.print(config)
    refuse_corrupt(header.path, verified)  # after the description: one line, exit 2


def _digest_row(stored: str | None, ok: bool | None, why_none: str) -> str:
    if stored is None:
        return f"(none: {why_none})"
    return f"{stored} ({'verified' if ok else 'DOES NOT MATCH: corrupt'})"


def _mining_table(stats: dict) -> None:
    """The mining figures of a neighbours file: its pairs, and with labels their precision against the rivals."""
    from isl_cli.cli.mine_neighbors import precision_rows, proposal_rows

    table = field_table("mining", value_justify="right")
    for key, label in (("entries", "neighbour entries"), ("new_pairs", "new pairs this round"), ("passes", "passes")):
        if stats.get(key) is not None:
            table.add_row(label, str(stats[key]))
    proposal_rows(table, stats)
    precision_rows(table, stats)
    console.print(table)
    if stats.get("labels_note"):
        console.print(f"precision: share of same-label pairs; {stats['labels_note']}")


def _short(value: object, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
