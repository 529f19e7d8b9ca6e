"""The ``guiju`` command."""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import json
import os
import signal
import sys
from pathlib import Path

import click

import services.tables  # noqa: F401  (the whole schema, for every command that touches the database)
from services.logs import configure_logging
from services.settings import Settings, SettingsError, load_settings


def _fail(message: str) -> None:
    click.echo(f"guiju: {message}", err=True)
    sys.exit(2)


def _production_settings() -> Settings:
    """Settings for a production process: refuse a weak secret or an out-of-date schema."""
    try:
        settings = load_settings("production")
    except SettingsError as exc:
        _fail(str(exc))
        raise  # unreachable
    from services.db.migrate import pending_migrations

    try:
        pending = asyncio.run(pending_migrations(settings.migration_database_url))
    except Exception as exc:
        _fail(
            "cannot read the schema version through GUIJU_MIGRATION_DATABASE_URL (or GUIJU_DATABASE_URL): "
            f"{type(exc).__name__}: {exc}"
        )
    if pending:
        _fail(
            f"the database has {len(pending)} pending migration(s) ({', '.join(pending)}): "
            "run `guiju db upgrade` first."
        )
    return settings


@click.group()
def main() -> None:
    """Guiju: Standard Operating Procedures that run as software."""


@main.command()
@click.option("--host", default=None, help="Defaults to GUIJU_HOST (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Defaults to GUIJU_PORT (8000).")
def run(host: str | None, port: int | None) -> None:
    """Embedded all-in-one: migrate, then serve the API with the worker and relay in this process."""
    import uvicorn

    settings = load_settings("embedded")
    settings = dataclasses.replace(settings, host=host or settings.host, port=port or settings.port)
    configure_logging(settings.log_level)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    from services.db.migrate import upgrade

    upgrade(settings.migration_database_url, settings.db_app_role)
    from services.app import create_app

    click.echo(
        f"Guiju is starting at http://{host or settings.host}:{port or settings.port}  (API docs: /docs)", err=True
    )
    uvicorn.run(
        create_app(settings, embedded=True),
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # the app believes forwarded headers from GUIJU_TRUSTED_PROXIES only
    )


@main.command()
@click.option("--workers", type=int, default=1, show_default=True, help="Uvicorn worker processes.")
def api(workers: int) -> None:
    """Serve the API (production: worker and scheduler run as their own processes)."""
    import uvicorn

    settings = _production_settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        "services.asgi:app",
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # the app believes forwarded headers from GUIJU_TRUSTED_PROXIES only
    )


@main.command()
@click.option("--processes", type=int, default=2, show_default=True)
@click.option("--threads", type=int, default=None, help="Defaults to GUIJU_WORKER_THREADS.")
def worker(processes: int, threads: int | None) -> None:
    """Run Dramatiq worker processes on the Redis broker."""
    settings = _production_settings()
    if not settings.redis_url:
        _fail("GUIJU_REDIS_URL is not set: production workers need Redis (`guiju run` embeds a worker instead).")
    args = [
        "services.worker",
        "--processes",
        str(processes),
        "--threads",
        str(threads or settings.worker_threads),
        # Our JSON handler is on the root logger already; Dramatiq's supervisor and the worker
        # processes it forks log through it rather than through a plain-text format of their own.
        "--skip-logging",
    ]
    # An idle queue is polled at most this many ms apart (Dramatiq's default, 1 s, would add up to a
    # second to the first event after a quiet spell); a poll is one cheap Redis call.
    os.environ.setdefault("dramatiq_worker_timeout", "20")
    # services.worker loads the plugins and logs JSON in the processes this supervisor starts.
    os.environ["GUIJU_PROCESS"] = "worker"
    configure_logging(settings.log_level)
    from dramatiq import cli as dramatiq_cli

    parser = dramatiq_cli.make_argument_parser()  # type: ignore[no-untyped-call]
    sys.exit(dramatiq_cli.main(parser.parse_args(args)))  # type: ignore[no-untyped-call]


@main.command()
def scheduler() -> None:
    """Run the outbox relay and the timer table (cron, delays, step SLAs); several may run at once."""
    settings = _production_settings()
    configure_logging(settings.log_level)
    if not settings.redis_url:
        _fail("GUIJU_REDIS_URL is not set: a production scheduler publishes to Redis.")
    # Importing every actor module also registers every timer handler (owners register at import).
    import services.worker  # noqa: F401
    from services.outbox.actors import publish
    from services.outbox.service import run_relay
    from services.scheduler.service import run_scheduler

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # Timers (cron, delayed actions, step SLAs, escalations) are claimed row by row with
        # SKIP LOCKED, so several schedulers may run at once, each fire happening once.
        await asyncio.gather(
            run_relay(publish, stop, interval=settings.relay_interval_seconds),
            run_scheduler(stop),
        )

    asyncio.run(_main())


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (with GUIJU_MIGRATION_DATABASE_URL if set)."""
    settings = load_settings("admin")
    from services.db.migrate import upgrade

    try:
        upgrade(settings.migration_database_url, settings.db_app_role)
    except Exception as exc:
        _fail(f"the migration failed and was rolled back: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    click.echo("database is up to date")


@db.command("pending")
def db_pending() -> None:
    """List migrations not yet applied."""
    from services.db.migrate import pending_migrations

    pending = asyncio.run(pending_migrations(load_settings("admin").migration_database_url))
    click.echo("\n".join(pending) if pending else "none")


@main.group()
def tenant() -> None:
    """Workspaces (tenants)."""


@tenant.command("create")
@click.argument("slug")
@click.option("--name", required=True)
@click.option(
    "--industry",
    default="general",
    show_default=True,
    type=click.Choice(["ecommerce", "foreign_trade", "clinic", "general"]),
)
@click.option("--locale", default="zh-CN", show_default=True, type=click.Choice(["zh-CN", "en"]))
@click.option("--owner-email", required=True)
@click.option("--owner-name", default=None)
def tenant_create(slug: str, name: str, industry: str, locale: str, owner_email: str, owner_name: str | None) -> None:
    """Create a workspace and its owner account (the owner's password is asked for)."""
    from services.accounts import service as accounts
    from services.accounts.schemas import SignupIn
    from services.db import open_session
    from tenants.errors import ProblemError

    password = os.environ.get("GUIJU_OWNER_PASSWORD") or getpass.getpass("Owner password: ")
    data = SignupIn(
        email=owner_email,
        password=password,
        display_name=owner_name or owner_email.split("@")[0],
        company_name=name,
        industry=industry,
        locale=locale,
        slug=slug,
    )

    async def _create() -> str:
        async with open_session(system=True) as session:
            _user, created = await accounts.signup(session, data, load_settings("admin"))
            return str(created.id)

    try:
        tenant_id = asyncio.run(_create())
    except ProblemError as exc:
        problems = "; ".join(f"{p.pointer}: {p.message}" for p in exc.errors)
        _fail(f"{exc.detail or exc.title}{' — ' + problems if problems else ''}")
    click.echo(f"created tenant {slug} ({tenant_id})")


@tenant.command("list")
def tenant_list() -> None:
    """List every workspace."""
    from sqlalchemy import select

    from services.db import open_session
    from tenants.models import Tenant

    async def _list() -> list[Tenant]:
        async with open_session(system=True) as session:
            return list(await session.scalars(select(Tenant).order_by(Tenant.created_at)))

    for t in asyncio.run(_list()):
        click.echo(f"{t.slug}\t{t.status}\t{t.industry}\t{t.name}\t{t.id}")


def _set_status(slug: str, status: str) -> None:
    from sqlalchemy import select

    from services.db import open_session
    from tenants import provisioning
    from tenants.models import Tenant, TenantStatus

    async def _apply() -> bool:
        async with open_session(system=True) as session:
            found = await session.scalar(select(Tenant).where(Tenant.slug == slug))
            if found is None:
                return False
            await provisioning.set_status(session, found, TenantStatus(status))
            return True

    if not asyncio.run(_apply()):
        _fail(f"no tenant with slug {slug!r}")
    click.echo(f"tenant {slug} is {status}")


@tenant.command("suspend")
@click.argument("slug")
def tenant_suspend(slug: str) -> None:
    """Suspend a workspace: its members can no longer work in it."""
    _set_status(slug, "suspended")


@tenant.command("resume")
@click.argument("slug")
def tenant_resume(slug: str) -> None:
    """Lift a suspension."""
    _set_status(slug, "active")


@main.group()
def audit() -> None:
    """The tamper-evident audit trail."""


@audit.command("verify")
@click.option("--tenant", "slug", required=True, help="The workspace's slug.")
def audit_verify(slug: str) -> None:
    """Recompute a workspace's audit chain: exit 0 when intact, 1 naming altered or deleted events."""
    from sqlalchemy import select

    from services.audit.service import AuditVerification, verify_chain
    from services.broker import tenant_session
    from services.db import dispose_databases, open_session
    from tenants.models import Tenant

    async def _verify() -> AuditVerification | None:
        try:
            async with open_session(system=True) as session:
                tenant_id = await session.scalar(select(Tenant.id).where(Tenant.slug == slug))
            if tenant_id is None:
                return None
            async with tenant_session(tenant_id) as session:
                return await verify_chain(session, tenant_id)
        finally:
            await dispose_databases()

    result = asyncio.run(_verify())
    if result is None:
        _fail(f"no tenant with slug {slug!r}")
        return
    if result.intact:
        click.echo(
            f"audit chain of {slug} is intact: {result.events_checked} event(s), "
            f"head seq {result.head_seq or 0}, head hash {result.head_hash or '-'}"
        )
        return
    click.echo(
        f"audit chain of {slug} is BROKEN: {len(result.problems)} problem(s) in {result.events_checked} event(s), "
        f"first at seq {result.first_broken_seq}"
    )
    for problem in result.problems:
        click.echo(f"  seq {problem.seq}: {problem.kind}: {problem.message}")
    sys.exit(1)


@main.group()
def plugin() -> None:
    """Plugins: list the installed ones, create and check a plugin distribution."""


@plugin.command("list")
def plugin_list() -> None:
    """List the plugins found in the ``guiju`` entry-point group and whether they load."""
    from services.marketplace.service import load_plugins

    _manager, report = load_plugins(load_settings("admin"))
    if not report:
        click.echo("no plugins installed")
    for item in report:
        version = item.info.version if item.info else "?"
        state = "loaded" if item.loaded else f"refused: {item.reason}"
        click.echo(f"{item.name}\t{version}\t{state}")
        for message in item.deprecations:
            click.echo(f"  warning: {message}")


@plugin.command("new")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    help="Where to create the plugin's directory NAME (default: the current directory).",
)
@click.option("--publisher", default=None, help="Who publishes the plugin, as the gallery shows it.")
def plugin_new(name: str, directory: Path, publisher: str | None) -> None:
    """Create the distribution of a new plugin NAME: a working action, its tests, ready to check."""
    from services.marketplace.scaffolding import DEFAULT_PUBLISHER, ScaffoldRefused, new_plugin

    try:
        target = new_plugin(name, directory, publisher=publisher or DEFAULT_PUBLISHER)
    except ScaffoldRefused as exc:
        _fail(str(exc))
        return
    click.echo(f"created the plugin {name} in {target}")
    click.echo(f"next: cd {target} && guiju plugin check .")


@plugin.command("check")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--unsandboxed",
    is_flag=True,
    help="Run the plugin's code as yourself, outside the sandbox: only for your own code on your own machine.",
)
def plugin_check(path: Path, as_json: bool, unsandboxed: bool) -> None:
    """Check a plugin distribution (a source directory with pyproject.toml, or a .whl) before it is
    published: its manifest, API range, hooks, imports and tests. The plugin's code runs in the
    sandbox (bubblewrap), as the platform checks submissions. Exits 1 when a check fails."""
    from services.marketplace.checks import run_checks

    try:
        settings = load_settings("admin")
    except SettingsError as exc:
        _fail(str(exc))
        return
    report = run_checks(path, settings=settings, unsandboxed=unsandboxed)
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        for check in report.checks:
            click.echo(f"{'PASS' if check.ok else 'FAIL'}  {check.name}")
            for detail in check.details:
                click.echo("\n".join(f"      {line}" for line in detail.splitlines()))
        click.echo("every check passed" if report.ok else "some checks failed")
    if report.sandbox_problem:
        click.echo(
            "the sandbox is unavailable here: install bubblewrap (Debian: apt-get install bubblewrap), "
            "or check your own code on your own machine with --unsandboxed",
            err=True,
        )
    if not report.ok:
        sys.exit(1)


@plugin.command("rotate-secrets")
def plugin_rotate_secrets() -> None:
    """Re-encrypt every stored plugin secret under the first key of GUIJU_SECRETS_KEYS."""
    from services.db import dispose_databases
    from services.marketplace import service as marketplace

    marketplace.configure(load_settings("admin"))

    async def _rotate() -> int:
        try:
            return await marketplace.rotate_secrets()
        finally:
            await dispose_databases()

    changed = asyncio.run(_rotate())
    click.echo(f"{changed} secret(s) re-encrypted under the key {marketplace.keyring().current_id}")


@main.group()
def templates() -> None:
    """Template packs: check a pack before it is shipped, list the gallery's."""


@templates.command("check")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
def templates_check(path: Path) -> None:
    """Check the template pack in PATH as the gallery does: every problem with its file and path.
    Exits 1 when there is one."""
    from services.gallery.loader import PackInvalid, load_pack
    from services.marketplace import service as marketplace

    marketplace.activate(*marketplace.load_plugins(load_settings("admin")))
    try:
        pack = load_pack(path)
    except PackInvalid as exc:
        click.echo(exc.detail)
        for problem in exc.errors or []:
            click.echo(f"  {problem.pointer}  [{problem.code}] {problem.message}")
        sys.exit(1)
    counts = ", ".join(f"{len(pack.of_kind(kind))} {kind}(s)" for kind in ("collection", "procedure", "automation"))
    click.echo(f"{pack.id} {pack.version}: valid ({counts}, {len(pack.of_kind('document'))} document(s))")


@templates.command("list")
def templates_list() -> None:
    """The packs the gallery offers, and those refused with their problems."""
    from services.gallery import service as gallery
    from services.marketplace import service as marketplace

    marketplace.activate(*marketplace.load_plugins(load_settings("admin")))
    offered = gallery.catalog()
    for pack in offered.packs.values():
        click.echo(f"{pack.id}\t{pack.version}\t{pack.industry}\t{pack.publisher}")
    for refused in offered.refused:
        click.echo(f"refused: {refused.directory} ({refused.publisher})")
        for problem in refused.problems:
            click.echo(f"  {problem.pointer}  [{problem.code}] {problem.message}")


if __name__ == "__main__":
    main()
