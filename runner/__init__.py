"""runner: a durable batch job runner for image-generation APIs.

The Python API for scripts: load a job file, open a queue, enqueue, work, read results. The
`runner` command line is a thin layer over the same functions. Names are imported on first
use, so that `runner status` does not pay for the HTTP stack it never uses.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.app import submit, work
    from runner.campaign import Campaign, CampaignSettings, JobSpec, Limits, ProviderConfig
    from runner.errors import InputError
    from runner.jobfile import load_jobfile
    from runner.states import Job, State
    from runner.store import Store, open_store, resolve_db

_WHERE = {
    "submit": "runner.app",
    "work": "runner.app",
    "Campaign": "runner.campaign",
    "CampaignSettings": "runner.campaign",
    "JobSpec": "runner.campaign",
    "Limits": "runner.campaign",
    "ProviderConfig": "runner.campaign",
    "InputError": "runner.errors",
    "load_jobfile": "runner.jobfile",
    "Job": "runner.states",
    "State": "runner.states",
    "Store": "runner.store",
    "open_store": "runner.store",
    "resolve_db": "runner.store",
}

__all__ = [
    "Campaign",
    "CampaignSettings",
    "InputError",
    "Job",
    "JobSpec",
    "Limits",
    "ProviderConfig",
    "State",
    "Store",
    "load_jobfile",
    "open_store",
    "resolve_db",
    "submit",
    "work",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
