"""runner: a durable batch job runner for image-generation APIs.

The Python API for scripts: load a job file, open a queue, enqueue, work, read results. The
`runner` command line is a thin layer over the same functions.
"""

from runner.app import resolve_db, submit, work
from runner.campaign import Campaign, CampaignSettings, JobSpec, Limits, ProviderConfig
from runner.errors import InputError
from runner.jobfile import load_jobfile
from runner.states import Job, State
from runner.store import Store, open_store

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
