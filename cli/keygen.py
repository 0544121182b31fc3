"""``meshctl keygen``: write a mesh secret or a node keypair."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a new mesh secret here (shared-secret mode).",
)
@click.option(
    "--keys-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write a new node keypair here (per-node keys mode).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing secret or key.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def keygen(secret_file: Path | None, keys_dir: Path | None, force: bool, as_json: bool) -> None:
    """Write a mesh secret (--secret-file) or a node keypair (--keys-dir).

    A secret file holds 32 random bytes (Z85) and is readable by its owner only;
    every member of the mesh needs a copy. A keys directory gets node.key (public),
    node.key_secret (owner-only) and allowed/ (the public keys this node admits,
    starting with its own); the public key printed goes into addresses:
    tcp://host:port#KEY.
    """
    if (secret_file is None) == (keys_dir is None):
        raise click.UsageError("give exactly one of --secret-file or --keys-dir")
    import mesh  # only when the command runs: meshctl --help needs none of it

    try:
        if secret_file is not None:
            path = mesh.write_secret(secret_file, force=force)
            result = {"secret_file": str(path)}
            text = f"wrote a mesh secret to {path} (mode 600): give every member a copy"
        else:
            assert keys_dir is not None
            public = mesh.write_keypair(keys_dir, force=force)
            result = {"keys_dir": str(keys_dir), "public_key": public.hex()}
            text = (
                f"wrote a node keypair to {keys_dir}\n"
                f"public key: {public.hex()}\n"
                f"admit it on other nodes by copying {keys_dir / 'node.key'} into their allowed/"
            )
    except mesh.MeshError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # a directory that is missing or not writable, a full disk
        where = exc.filename or secret_file or keys_dir
        raise click.ClickException(f"cannot write {where}: {exc.strerror or exc}") from None
    click.echo(json.dumps(result) if as_json else text)
