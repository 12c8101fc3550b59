"""`runner doctor`: check that a campaign can run here, one line per check.

Checks: the database is reachable, whole (SQLite's quick_check), writable and at the newest
schema (one that is damaged, lost its tables or is read-only is the paragraph and exit code 2
of every command); the API key of every provider
account in use (by the job file, else by every campaign in the database) is in the
environment; each provider accepts its key, asked with one cheap authenticated call
(Replicate: `GET /v1/account`; BFL style: `GET /v1/get_result` for a random id, which answers
"Task not found" to a key it accepts; an aggregator's Replicate style, which documents no
account route: `GET /v1/predictions/{random id}`, a 404 to a key it accepts); and the output
folders have room (a warning under 1 GB). Nothing is created or changed, and a key is never printed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import httpx

from runner.campaign import CampaignSettings, ProviderConfig
from runner.jobfile import load_jobfile
from runner.presets import routes, simulated
from runner.providers.errors import credentials
from runner.providers.factory import auth_headers
from runner.store import DatabaseError, health, opening, peek_store, resolve_db
from runner.store.migrate import head_revision

__all__ = ["LOW_DISK", "Check", "diagnose"]

LOW_DISK = 1024**3  # bytes free in an output folder below which doctor warns
TIMEOUT = 20.0  # seconds for each provider's answer

Status = Literal["ok", "WARN", "FAIL"]


@dataclass(frozen=True)
class Check:
    status: Status
    what: str
    detail: str

    @property
    def line(self) -> str:
        return f"{self.status:<4} {self.what}: {self.detail}"


async def diagnose(
    jobfile: str | None, db: str | None, *, simulate: bool = False, sim_url: str | None = None
) -> list[Check]:
    """Every check's result. A bad job file raises InputError (exit code 2), like `run`."""
    settings = [load_jobfile(jobfile).settings] if jobfile is not None else []
    checks, from_db = _database(resolve_db(db, jobfile), with_jobfile=jobfile is not None)
    settings = settings or from_db
    async with _simulator(simulate, sim_url) as url:
        for provider, names in _accounts(settings).items():
            checks.extend(await _provider(provider, names, url))
    checks.extend(_disk(sorted({s.output_dir for s in settings})))
    return checks


def _database(db: str, *, with_jobfile: bool) -> tuple[list[Check], list[CampaignSettings]]:
    """The database's check, and the settings of its campaigns. A database that is damaged,
    lost its tables, is someone else's or is read-only raises DatabaseError: the one paragraph
    every command gives (exit code 2)."""
    target = opening.target(db)
    shown = target.place.shown
    if target.path is not None and not target.size:
        if with_jobfile:
            return [Check("ok", "database", f"none yet at {shown}; `runner run` creates it")], []
        return [Check("FAIL", "database", f"no runner database at {shown}; pass --db")], []
    store = peek_store(db)
    if store is None:  # a server database without runner's tables
        if with_jobfile:
            return [
                Check(
                    "ok", "database", f"no runner tables yet at {shown}; `runner run` creates them"
                )
            ], []
        raise DatabaseError(health.no_tables(target.place))
    try:
        if target.path is not None and opening.access_of(target.path) != "write":
            reason = opening.why_read_only(target.path)
            writes = "campaigns cannot run on it (`runner run` and `work` write to it)"
            raise DatabaseError(health.read_only(target.place, reason, writes=writes))
        head = head_revision()
        ok = Check(
            "ok", "database", f"{shown} reachable, whole, schema at the newest revision ({head})"
        )
        return [ok], [store.settings(name) for name in store.campaign_names()]
    finally:
        store.close()


def _accounts(settings: list[CampaignSettings]) -> dict[ProviderConfig, list[str]]:
    """The provider accounts in use, each with the campaigns that use it."""
    out: dict[ProviderConfig, list[str]] = {}
    seen: dict[tuple[str, str, str], ProviderConfig] = {}
    for s in settings:
        first = seen.setdefault(s.provider.account, s.provider)
        out.setdefault(first, []).append(s.name)
    return out


@asynccontextmanager
async def _simulator(enabled: bool, url: str | None) -> AsyncIterator[str | None]:
    if url or not enabled:
        yield url
        return
    from runner.simulator import SimConfig, Simulator, serve

    async with anyio.create_task_group() as tg:
        yield await tg.start(serve, Simulator(SimConfig()))
        tg.cancel_scope.cancel()


async def _provider(provider: ProviderConfig, names: list[str], sim_url: str | None) -> list[Check]:
    env = provider.api_key_env
    used_by = f"used by {', '.join(names)}"
    key = os.environ.get(env, "").strip()
    if not key:
        return [Check("FAIL", f"key {env}", f"not set in the environment ({used_by})")]
    checks = [Check("ok", f"key {env}", f"set ({used_by})")]
    config = simulated(provider, sim_url) if sim_url else provider
    what = f"provider {provider.name} at {config.base_url}"
    base = config.base_url.rstrip("/")
    url, params = f"{base}/v1/account", {}
    if config.style == "bfl":
        url, params = f"{base}/v1/get_result", {"id": str(uuid.uuid4())}
    elif "account" not in routes(config):
        # an aggregator documents no account route: ask for an unknown prediction instead
        url = f"{base}/v1/predictions/{uuid.uuid4().hex}"
    headers = auth_headers(config, key)
    # what the answer says (an account name, an error) is printed: never with the key in it
    secrets = credentials(httpx.Headers(headers))
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, headers=headers) as client:
            response = await client.get(url, params=params)
    except httpx.HTTPError as exc:
        reason = secrets.redact(str(exc) or type(exc).__name__)
        return [*checks, Check("FAIL", what, f"cannot be reached: {reason}")]
    judged = _judge(config, what, env, response)
    checks.append(dataclasses.replace(judged, detail=secrets.redact(judged.detail)))
    return checks


def _judge(config: ProviderConfig, what: str, env: str, response: httpx.Response) -> Check:
    status = response.status_code
    if status in (401, 403):
        return Check("FAIL", what, f"refuses the key in {env} (HTTP {status}): check the key")
    if status == 404 or (config.style == "bfl" and status == 200):
        # An unknown task or prediction: answered only once the key was accepted.
        return Check("ok", what, f"accepts the key in {env}")
    if config.style == "replicate" and status == 200:
        try:
            body = response.json()
            account = body.get("username") if isinstance(body, dict) else None
        except ValueError:
            account = None
        named = f" (account {account})" if isinstance(account, str) else ""
        return Check("ok", what, f"accepts the key in {env}{named}")
    if status == 402:
        return Check("FAIL", what, f"accepts the key in {env}, but the account is out of credit")
    return Check("FAIL", what, f"answered HTTP {status} to a check of the key in {env}")


def _disk(folders: list[str]) -> list[Check]:
    checks = []
    for folder in folders:
        path = Path(folder)
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            free = shutil.disk_usage(path).free
        except OSError as exc:
            checks.append(Check("FAIL", f"disk {folder}", f"cannot be checked: {exc}"))
            continue
        shown = f"{free / 1024**3:.1f} GB free"
        if free < LOW_DISK:
            checks.append(Check("WARN", f"disk {folder}", f"only {shown} (under 1 GB)"))
        else:
            checks.append(Check("ok", f"disk {folder}", shown))
    return checks
