"""Reports on a campaign: job listings, manifests, provenance sidecars and an HTML gallery.

Everything here reads jobs from the store in batches (`Store.jobs`), so memory stays flat
whatever the size of the campaign. `records` builds the plain records (no I/O); `jobs_view`
formats `runner jobs`; `export` writes manifests; `provenance` writes the `<image>.json`
sidecars (the worker calls it as each download completes); `gallery` renders the HTML page.
This package imports nothing heavy on purpose: the worker imports `provenance`.
"""
