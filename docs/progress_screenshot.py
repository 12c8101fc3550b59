"""Make docs/progress.png: the live progress table of a campaign half-way through.

Runs a 60-job campaign on the built-in simulator (some jobs are moderated or fail, to show the
problems list), draws the same table `runner run` shows on a terminal, exports it as SVG with
rich, and has headless Chromium turn the SVG into a PNG.

    .venv/bin/python docs/progress_screenshot.py
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import anyio
from rich.console import Console

from runner import app, load_jobfile, open_store
from runner.progress import _snapshot, render
from runner.simulator import FaultSpec, SimConfig

HERE = Path(__file__).resolve().parent


async def main(folder: Path) -> str:
    prompts = [f"a lighthouse in a storm, study {i}" for i in range(60)]
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    (folder / "jobs.yaml").write_text(
        "campaign: lighthouses\nprovider: bfl\nmodel: flux-pro-1.1\n"
        "input: {width: 512, height: 512}\nprompts_file: prompts.txt\noutput: {dir: out}\n"
    )
    store = open_store(str(folder / "runner.db"))
    store.enqueue(load_jobfile(str(folder / "jobs.yaml")))
    config = SimConfig(
        seed=7,
        duration_median=2.0,
        duration_sigma=0.4,
        faults={"create": FaultSpec(moderate_rate=0.08, fail_rate=0.05)},
    )
    console = Console(record=True, width=92, force_terminal=True)
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            await app.work(
                store,
                ["lighthouses"],
                simulate=True,
                sim_config=config,
                handle_signals=False,
                progress_every=0,
            )

        tg.start_soon(run)
        await anyio.sleep(9)
        view, problems = await anyio.to_thread.run_sync(_snapshot, store, ["lighthouses"])
        console.print(render(view, problems))
        tg.cancel_scope.cancel()
    return console.export_svg(title="runner run jobs.yaml")


def screenshot(svg: str, png: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("needs Chromium (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "progress.svg"
        page.write_text(svg)
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--hide-scrollbars",
                "--window-size=1000,470",
                f"--screenshot={png}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as work:
        svg = anyio.run(main, Path(work))
    screenshot(svg, HERE / "progress.png")
    print(f"wrote {HERE / 'progress.png'}")
