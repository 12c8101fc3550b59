"""Builders for campaigns in tests, without going through a job file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runner.campaign import Campaign, CampaignSettings, JobSpec, Limits, ProviderConfig

BFL = ProviderConfig(
    name="bfl", style="bfl", base_url="https://api.bfl.ai", auth="x-key", api_key_env="BFL_API_KEY"
)


def campaign(
    name: str = "c1",
    n: int = 3,
    out: Path | str = "/tmp/out",
    provider: ProviderConfig = BFL,
    limits: Limits | None = None,
    start: int = 0,
    input_extra: dict[str, object] | None = None,
    meta_extra: dict[str, object] | None = None,
    model: str | None = None,
) -> Campaign:
    settings = CampaignSettings(
        name=name,
        provider=provider,
        output_dir=str(out),
        filename_template="{index:05d}-{slug}.{ext}",
        limits=limits or Limits(),
    )
    jobs = [
        JobSpec(
            key=f"k{i}",
            index=i + 1,
            model=model
            or ("flux-pro-1.1" if provider.style == "bfl" else "black-forest-labs/flux-schnell"),
            input={"prompt": f"prompt {i}", **(input_extra or {})},
            meta={"prompt": f"prompt {i}", "slug": f"prompt-{i}", **(meta_extra or {})},
        )
        for i in range(start, start + n)
    ]
    return Campaign(settings=settings, jobs=jobs)


def finished_history(store: Any, campaign_: Campaign, durations: Sequence[float]) -> None:
    """Enqueue `campaign_` and mark its jobs done an hour ago, job i having taken
    durations[i]: the generation times an earlier run would have left for the poll schedule."""
    import time

    import sqlalchemy as sa

    from runner.states import State
    from runner.store.schema import jobs

    store.enqueue(campaign_)
    now = time.time()
    done = sorted(store.jobs(campaign_.settings.name), key=lambda job: job.index)
    with store.write() as conn:
        for job, took in zip(done, durations, strict=True):
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job.id)
                .values(
                    state=State.DONE.value,
                    submitted_at=now - 3600 - took,
                    ready_at=now - 3600,
                    generation_s=took,
                    finished_at=now - 3600,
                )
            )
