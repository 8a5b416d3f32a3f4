"""``costplane ingest otlp``: receive OpenTelemetry GenAI spans over OTLP/HTTP and publish them as usage events."""

from __future__ import annotations

from typing import Annotated

import typer

from costplane.cli.output import console

ingest_app = typer.Typer(
    help="Receive usage from other telemetry: OTLP/HTTP traces with GenAI spans.", no_args_is_help=True
)


MAP_HELP = {
    "tenant_attr": "Span/resource attribute naming the tenant; repeat or comma-separate to try several in order "
    "(default: costplane.tenant, tenant.id).",
    "feature_attr": "… the feature (default: costplane.feature, service.name).",
    "user_attr": "… the user (default: costplane.user_id, user.id, enduser.id).",
    "session_attr": "… the session (default: costplane.session_id, session.id, gen_ai.conversation.id).",
}


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")


def _keys(values: list[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        return default
    return tuple(k.strip() for v in values for k in v.split(",") if k.strip())


@ingest_app.command("otlp")
def otlp(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(4318, "--port", min=0, max=65535, help="Port (4318 is OTLP/HTTP's)."),
    default_tenant: str = typer.Option(
        "default", "--default-tenant", help="Tenant of spans that carry no tenant attribute ('' refuses them)."
    ),
    tenant_attr: Annotated[list[str] | None, typer.Option("--tenant-attr", help=MAP_HELP["tenant_attr"])] = None,
    feature_attr: Annotated[list[str] | None, typer.Option("--feature-attr", help=MAP_HELP["feature_attr"])] = None,
    user_attr: Annotated[list[str] | None, typer.Option("--user-attr", help=MAP_HELP["user_attr"])] = None,
    session_attr: Annotated[list[str] | None, typer.Option("--session-attr", help=MAP_HELP["session_attr"])] = None,
) -> None:
    """Serve POST /v1/traces (protobuf or JSON, gzip or not); one usage event per GenAI model-call span."""
    from costplane.integrations.otlp import AttributeMap
    from costplane.integrations.otlp_server import OtlpReceiver, make_server
    from costplane.publisher import UsagePublisher

    base = AttributeMap()
    mapping = AttributeMap(
        tenant=_keys(tenant_attr, base.tenant),
        feature=_keys(feature_attr, base.feature),
        user_id=_keys(user_attr, base.user_id),
        session_id=_keys(session_attr, base.session_id),
        default_tenant=default_tenant or None,
    )
    receiver = OtlpReceiver(None, mapping)
    try:
        server = make_server(receiver, host, port)
    except OSError as exc:
        console(stderr=True).print(f"[red]cannot listen on {host}:{port}: {exc.strerror or exc}[/]")
        raise typer.Exit(2) from None
    publisher = UsagePublisher()
    receiver.publisher = publisher
    console(stderr=True).print(f"OTLP/HTTP receiver on http://{host}:{server.server_address[1]}/v1/traces")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        publisher.close()
