"""The options the commands that read the ledger share, defined once so each command says the same in ``--help``.

Each is an ``Annotated`` type: a command declares ``api_url: ApiUrl = None`` and Typer reads the option from it.
"""

from typing import Annotated

import typer

ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        envvar="COSTPLANE_WORKER_API_URL",
        help="Ask this worker's /api/report instead of opening ClickHouse (default: the directory owner's).",
    ),
]
Database = Annotated[str | None, typer.Option("--database", help="Database (default: from settings).")]
Since = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="From this time: ISO date or time (UTC if naive), or ago: 30m, 24h, 7d, 2w. Default: 30 days ago.",
    ),
]
Until = Annotated[str | None, typer.Option("--until", help="Before this time (exclusive). Default: now.")]
Tenant = Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")]
