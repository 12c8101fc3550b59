"""The simulator's in-memory state: predictions, accounts, rate windows, counters.

Nothing here speaks HTTP. A prediction's whole future (queue delay, generation time, outcome) is
drawn when it is created, and its state at any moment is computed from timestamps when someone
asks, so a fake clock can move time in tests. The one background task, the webhook sender in
`webhooks.py`, asks `webhooks_due()` which events have happened; the state itself never waits.

Times inside are readings of the injectable `clock`. `Simulator.wall()` turns them into true
epoch seconds (what `stats()` reports) and `Simulator.provider_time()` into the provider's clock
(`clock_offset` away), which is what API answers show; both follow a fake clock.

The HTTP server runs in its own thread while tests read `stats()` from theirs, so every public
method takes the one lock.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import math
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from runner.simulator.config import ANSWER_FAULTS, OUTCOME_FAULTS, SimConfig
from runner.simulator.images import ImageCache, render_image, scaled_size

Style = Literal["replicate", "bfl"]
Outcome = Literal["succeeded", "failed", "moderated", "request_moderated", "aborted", "canceled"]

# queued/running are the only non-terminal phases; the rest never change once reached
TERMINAL_PHASES = frozenset(
    {"succeeded", "failed", "moderated", "request_moderated", "canceled", "aborted"}
)

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


_OUTCOMES: dict[str, Outcome] = {
    "request_moderate": "request_moderated",
    "moderate": "moderated",
    "fail": "failed",
    "abort": "aborted",
    "cancel": "canceled",
}


def _prompt_of(inputs: dict[str, Any]) -> str | None:
    prompt = inputs.get("prompt")
    return prompt if isinstance(prompt, str) else None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def new_replicate_id() -> str:
    # ids are random, not drawn from the seeded RNG: a runner's database that outlives one
    # simulator must never meet the same id again in the next run
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


@dataclass
class Prediction:
    """One accepted generation request, with its future decided at create."""

    id: str
    style: Style
    namespace: str  # which API surface owns it: lookups from another surface do not see it
    aggregator: bool
    key: str
    route: str
    model: str
    version: str
    input: dict[str, Any]
    seq: int
    created: float
    start: float
    end: float
    duration: float
    outcome: Outcome
    seed: int
    size: tuple[int, int]
    ext: str
    num_outputs: int
    single_output: bool
    cost: float
    deadline: float | None = None
    canceled_at: float | None = None
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    webhooks_sent: set[str] = field(default_factory=set)  # events already sent
    refunded: bool = False
    # an injected fault: the outputs are gone the moment it finishes
    expired_early: bool = False
    # BFL: until this instant every get_result of it answers `Task not found`
    unknown_until: float | None = None
    files_served: set[int] = field(default_factory=set)  # output indexes served whole

    @property
    def prompt(self) -> str:
        prompt = self.input.get("prompt")
        return prompt if isinstance(prompt, str) else ""

    def terminal_at(self) -> float:
        """When this prediction stops changing, given what is known now."""
        stops = [self.end]
        if self.canceled_at is not None:
            stops.append(self.canceled_at)
        if self.deadline is not None:
            stops.append(self.deadline)
        return min(stops)


@dataclass(frozen=True)
class Snapshot:
    """A prediction's state at one moment."""

    phase: str  # queued, running, or one of TERMINAL_PHASES
    started: float | None
    completed: float | None
    progress: float | None

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


@dataclass(frozen=True)
class Refused:
    """Why a create was turned away before anything was created or billed."""

    reason: Literal["no_credit", "in_flight"]
    limit: int | None = None


@dataclass(frozen=True)
class FaultDraw:
    """The faults that hit one request, drawn together so runs stay reproducible.

    `kind` is the one fault that decides the answer (see `config.ANSWER_FAULTS`), or None;
    `slow_seconds` (a stall before anything is done) and `drip_seconds` (a download's bytes
    trickle) come on top of it.
    """

    kind: str | None = None
    slow_seconds: float = 0.0
    after_seconds: float = 0.0  # `slow_after_create`: the stall after the create was done
    drip_seconds: float = 0.0
    status: int = 500  # for `error`, `error_after_create` and `gone`
    retry_after: float = 1.0  # for `rate_limit`

    @property
    def error_status(self) -> int | None:
        return self.status if self.kind == "error" else None

    @property
    def drop_after_create(self) -> bool:
        return self.kind == "drop_after_create"

    @property
    def error_after_create(self) -> int | None:
        return self.status if self.kind == "error_after_create" else None


@dataclass
class _Counters:
    creates: int = 0
    creates_by_input: dict[str, int] = field(default_factory=dict)
    creates_by_route: dict[str, int] = field(default_factory=dict)
    polls: int = 0
    polls_via_polling_url: int = 0
    cancels: int = 0
    lists: int = 0
    downloads: int = 0
    downloads_with_auth: int = 0
    status_codes: dict[str, int] = field(default_factory=dict)
    rate_limited: int = 0
    max_in_flight_seen: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    dropped_creates: int = 0
    faults_injected: int = 0
    faults: dict[str, int] = field(default_factory=dict)  # "route:kind" -> how many
    auth_failures: int = 0
    webhooks_sent: int = 0  # webhook requests made (retries and replays included)
    webhook_answers: dict[str, int] = field(default_factory=dict)  # status (or "error") -> count


class Simulator:
    """The simulated providers' memory and rules, driven by the HTTP layer in `app.py`."""

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.RLock()
        self._config = config if config is not None else SimConfig()
        self._clock = clock
        # anchor the clock to the epoch once, so shown timestamps follow the injected clock
        self._epoch_anchor = time.time() - clock()
        # (from instant, offset) steps of the provider's clock: an event keeps the time its
        # clock showed when it happened, as a real provider's records do across a clock step
        self._offsets: list[tuple[float, float]] = [(-math.inf, self._config.clock_offset)]
        self._secret = secrets.token_bytes(32)
        self.images = ImageCache()
        self._init_state()

    def _init_state(self) -> None:
        seed = self._config.seed
        # separate streams: turning a fault on must not change the generation times drawn
        self._gen_rng = random.Random(f"{seed}:generation")
        self._fault_rng = random.Random(f"{seed}:faults")
        self._unknown_rng = random.Random(f"{seed}:unknown-after-create")
        self._predictions: dict[str, Prediction] = {}
        self._by_owner: dict[tuple[str, str], list[Prediction]] = {}
        self._open: dict[str, dict[str, Prediction]] = {}
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._spent: dict[str, float] = {}
        self._seq = 0
        self._counters = _Counters()
        self._fault_hits: dict[tuple[str, str | None], int] = {}
        # predictions with a webhook whose events are not all sent yet
        self._webhook_watch: dict[str, Prediction] = {}
        self.images.clear()

    # -- configuration and time ------------------------------------------------------------

    @property
    def config(self) -> SimConfig:
        return self._config

    def set_config(self, config: SimConfig) -> None:
        with self._lock:
            self._config = config
            self._step_clock()

    def update_config(self, partial: dict[str, Any]) -> SimConfig:
        """Lay a partial config over the current one (raises ValueError if it is invalid)."""
        with self._lock:
            self._config = self._config.merged(partial)
            self._step_clock()
            return self._config

    def _step_clock(self) -> None:
        offset = self._config.clock_offset
        if offset != self._offsets[-1][1]:
            self._offsets.append((self.now(), offset))

    def reset(self) -> None:
        """Forget every prediction and counter; the config stays, the RNGs start over."""
        with self._lock:
            self._init_state()

    def now(self) -> float:
        return self._clock()

    def wall(self, instant: float) -> float:
        """True epoch seconds of an instant."""
        return self._epoch_anchor + instant

    def provider_time(self, instant: float) -> float:
        """Epoch seconds the provider's clock showed (or will show) at an instant, in whole
        microseconds as answers show them, so that a created_at copied from an answer into a
        list filter selects that very prediction."""
        with self._lock:
            offset = next(o for since, o in reversed(self._offsets) if since <= instant)
        return datetime.fromtimestamp(self.wall(instant) + offset, UTC).timestamp()

    # -- accounts and limits --------------------------------------------------------------

    def key_allowed(self, key: str | None) -> bool:
        if not key:
            return False
        keys = self._config.api_keys
        return keys is None or key in keys

    def note_auth_failure(self) -> None:
        with self._lock:
            self._counters.auth_failures += 1

    def check_rate(self, key: str, bucket: Literal["create", "read"]) -> int | None:
        """Admit one request into the key's sliding window, or say how many seconds to wait."""
        with self._lock:
            config = self._config
            limit = (
                config.replicate_create_limit if bucket == "create" else config.replicate_read_limit
            )
            if limit is None:
                return None
            now = self.now()
            window = self._windows.setdefault((key, bucket), deque())
            while window and window[0] <= now - config.rate_limit_window:
                window.popleft()
            if len(window) >= limit:
                return max(1, math.ceil(window[0] + config.rate_limit_window - now))
            window.append(now)
            return None

    def credits_left(self, key: str) -> float | None:
        with self._lock:
            if self._config.credits is None:
                return None
            self._prune_open(key, self.now())
            return self._config.credits - self._spent.get(key, 0.0)

    def draw_fault(self, route: str, prompt: str | None = None) -> FaultDraw:
        """The faults for one request on `route` about a prediction with this prompt (None:
        a request about no prediction, such as a list)."""
        with self._lock:
            spec = self._config.fault(route)
            rng = self._fault_rng
            # always draw the same count so one route's settings do not shift the others'
            slow, answer, drip = rng.random(), rng.random(), rng.random()
            if not spec.applies_to(prompt):
                return FaultDraw()
            hits_key = (route, prompt)
            if spec.times is not None and self._fault_hits.get(hits_key, 0) >= spec.times:
                return FaultDraw()
            kind = None
            threshold = 0.0
            for name in ANSWER_FAULTS:
                threshold += getattr(spec, f"{name}_rate")
                if answer < threshold:
                    kind = name
                    break
            draw = FaultDraw(
                kind=kind,
                slow_seconds=spec.slow_seconds if slow < spec.slow_rate else 0.0,
                after_seconds=spec.slow_seconds if kind == "slow_after_create" else 0.0,
                drip_seconds=spec.drip_seconds if drip < spec.drip_rate else 0.0,
                status=spec.gone_status if kind == "gone" else spec.error_status,
                retry_after=spec.retry_after,
            )
            kinds = [
                name
                for name, hit in (
                    (kind, kind is not None),
                    ("slow", draw.slow_seconds > 0),
                    ("drip", draw.drip_seconds > 0),
                )
                if hit and name is not None
            ]
            if kinds:
                self._fault_hits[hits_key] = self._fault_hits.get(hits_key, 0) + 1
                counters = self._counters
                for name in kinds:
                    counters.faults_injected += 1
                    label = f"{route}:{name}"
                    counters.faults[label] = counters.faults.get(label, 0) + 1
            return draw

    # -- predictions ----------------------------------------------------------------------

    def create(
        self,
        *,
        style: Style,
        namespace: str,
        aggregator: bool,
        key: str,
        route: str,
        model: str,
        version: str,
        inputs: dict[str, Any],
        size: tuple[int, int],
        ext: str,
        num_outputs: int = 1,
        single_output: bool = False,
        cost: float = 0.0,
        cancel_after: float | None = None,
        webhook: str | None = None,
        webhook_events_filter: list[str] | None = None,
        max_in_flight: int | None = None,
        model_max_in_flight: int | None = None,
        prediction_id: str | None = None,
    ) -> Prediction | Refused:
        """Accept a prediction, or refuse it for credit or concurrency without any side effect."""
        with self._lock:
            config = self._config
            now = self.now()
            open_now = self._prune_open(key, now)
            if max_in_flight is not None:
                same_style = [p for p in open_now.values() if p.namespace == namespace]
                if len(same_style) >= max_in_flight:
                    return Refused("in_flight", max_in_flight)
                if model_max_in_flight is not None:
                    same_model = [p for p in same_style if p.model == model]
                    if len(same_model) >= model_max_in_flight:
                        return Refused("in_flight", model_max_in_flight)
            spent = self._spent.get(key, 0.0)
            if config.credits is not None and cost > 0 and spent + cost > config.credits + 1e-9:
                return Refused("no_credit")

            fault = config.fault("create")
            rng = self._gen_rng
            # a fixed number of draws per create keeps every later prediction reproducible
            # lognormal around the median, written out so a zero median needs no special draw
            duration = config.duration_median * math.exp(config.duration_sigma * rng.gauss())
            outcome_draw = rng.random()
            drawn_seed = rng.randrange(2**31)
            unknown_until = None
            if style == "bfl":
                # a stream of its own, drawn for every BFL task: the other draws never shift
                window = config.bfl_not_found_after_create
                if self._unknown_rng.random() < config.bfl_not_found_rate and window > 0:
                    unknown_until = now + window

            outcome: Outcome = "succeeded"
            expired_early = False
            drawn = None
            if fault.applies_to(_prompt_of(inputs)):
                threshold = 0.0
                for name in OUTCOME_FAULTS:
                    threshold += getattr(fault, f"{name}_rate")
                    if outcome_draw < threshold:
                        drawn = name
                        break
            if drawn == "expire":
                expired_early = True
            elif drawn is not None:
                outcome = _OUTCOMES[drawn]
            if drawn is not None:
                label = f"create:{drawn}"
                self._counters.faults[label] = self._counters.faults.get(label, 0) + 1
                self._counters.faults_injected += 1
            start = now + config.queue_delay
            # an input refused by moderation never runs, nor does an aborted prediction
            never_runs = outcome in ("request_moderated", "aborted")
            end = start if never_runs else start + duration
            seed = inputs.get("seed")
            if not isinstance(seed, int) or isinstance(seed, bool):
                seed = drawn_seed

            self._seq += 1
            prediction = Prediction(
                id=prediction_id or new_replicate_id(),
                style=style,
                namespace=namespace,
                aggregator=aggregator,
                key=key,
                route=route,
                model=model,
                version=version,
                input=copy.deepcopy(inputs),
                seq=self._seq,
                created=now,
                start=start,
                end=end,
                duration=end - start,
                outcome=outcome,
                seed=seed,
                size=size,
                ext=ext,
                num_outputs=num_outputs,
                single_output=single_output,
                cost=cost,
                deadline=None if cancel_after is None else now + cancel_after,
                webhook=webhook,
                webhook_events_filter=webhook_events_filter,
                expired_early=expired_early,
                unknown_until=unknown_until,
            )
            self._predictions[prediction.id] = prediction
            self._by_owner.setdefault((namespace, key), []).append(prediction)
            if webhook:
                self._webhook_watch[prediction.id] = prediction
            open_now[prediction.id] = prediction
            self._spent[key] = spent + cost

            counters = self._counters
            counters.creates += 1
            canonical = canonical_json(inputs)
            counters.creates_by_input[canonical] = counters.creates_by_input.get(canonical, 0) + 1
            counters.creates_by_route[route] = counters.creates_by_route.get(route, 0) + 1
            counters.max_in_flight_seen[key] = max(
                counters.max_in_flight_seen.get(key, 0), len(open_now)
            )
            return prediction

    def _prune_open(self, key: str, now: float) -> dict[str, Prediction]:
        """The key's unfinished predictions; refunds the ones that turned out aborted."""
        open_now = self._open.setdefault(key, {})
        for pid, prediction in list(open_now.items()):
            snap = self._snapshot(prediction, now)
            if snap.terminal:
                del open_now[pid]
                self._settle(prediction, snap)
        return open_now

    def _settle(self, prediction: Prediction, snap: Snapshot) -> None:
        # Replicate does not bill a prediction aborted before it started
        if snap.phase == "aborted" and not prediction.refunded:
            prediction.refunded = True
            self._spent[prediction.key] = self._spent.get(prediction.key, 0.0) - prediction.cost

    def get(self, namespace: str, key: str, prediction_id: str) -> Prediction | None:
        """A prediction as its owner sees it on one API surface; None for anyone else."""
        with self._lock:
            prediction = self._predictions.get(prediction_id)
            if prediction is None or prediction.namespace != namespace or prediction.key != key:
                return None
            return prediction

    def find(self, prediction_id: str) -> Prediction | None:
        with self._lock:
            return self._predictions.get(prediction_id)

    def snapshot(self, prediction: Prediction, now: float | None = None) -> Snapshot:
        with self._lock:
            now = self.now() if now is None else now
            snap = self._snapshot(prediction, now)
            if snap.terminal:
                self._settle(prediction, snap)
            return snap

    @staticmethod
    def _snapshot(p: Prediction, now: float) -> Snapshot:
        stop_at: float | None = None
        by_deadline = False
        if p.canceled_at is not None:
            stop_at = p.canceled_at
        if p.deadline is not None and (stop_at is None or p.deadline < stop_at):
            stop_at, by_deadline = p.deadline, True
        if stop_at is not None and stop_at < p.end and now >= stop_at:
            if stop_at < p.start:
                return Snapshot("aborted" if by_deadline else "canceled", None, stop_at, None)
            return Snapshot("canceled", p.start, stop_at, None)
        if now >= p.end:
            # an aborted prediction never started
            return Snapshot(p.outcome, None if p.outcome == "aborted" else p.start, p.end, None)
        # strictly after: a prediction is still `starting` in the very answer that creates it
        if now > p.start:
            done = (now - p.start) / p.duration if p.duration > 0 else 1.0
            return Snapshot("running", p.start, None, round(min(0.99, max(0.0, done)), 3))
        return Snapshot("queued", None, None, 0.0)

    def cancel(self, prediction: Prediction) -> Snapshot:
        """Cancel if still unfinished; a finished prediction is left as it is."""
        with self._lock:
            now = self.now()
            snap = self._snapshot(prediction, now)
            if not snap.terminal:
                prediction.canceled_at = now
                snap = self._snapshot(prediction, now)
            self._counters.cancels += 1
            return snap

    def data_removed(self, prediction: Prediction, snap: Snapshot, now: float) -> bool:
        """Replicate deletes a finished API prediction's data (input, output, logs, files)
        `replicate_data_retention` after its create, or `replicate_output_ttl` after it
        finished, whichever comes first."""
        if snap.completed is None:
            return False
        config = self._config
        return (
            prediction.expired_early
            or now >= snap.completed + config.replicate_output_ttl
            or now >= prediction.created + config.replicate_data_retention
        )

    def unknown_yet(self, prediction: Prediction, now: float) -> bool:
        """BFL's `Task not found` for a task polled too soon after its create."""
        return prediction.unknown_until is not None and now < prediction.unknown_until

    def forgotten(self, snap: Snapshot, now: float) -> bool:
        """BFL stops knowing a finished task a while after it finished."""
        return snap.completed is not None and now >= snap.completed + self._config.bfl_forget_after

    def file_expiry(self, prediction: Prediction, snap: Snapshot) -> int:
        """Epoch second, on the provider's clock, after which the output files stop being
        served (BFL; Replicate's files last as long as the prediction's data)."""
        assert snap.completed is not None
        completed = self.provider_time(snap.completed)
        if prediction.expired_early:
            # signed to expire a second before it finished: no download can succeed
            return math.floor(completed) - 1
        ttl = (
            self._config.replicate_output_ttl
            if prediction.style == "replicate"
            else self._config.bfl_url_ttl
        )
        return math.ceil(completed + ttl)

    def list_page(
        self,
        namespace: str,
        key: str,
        *,
        created_after: float | None = None,
        created_before: float | None = None,
        older_than: int | None = None,
        newer_than: int | None = None,
        page_size: int | None = None,
        others: bool = False,
    ) -> tuple[list[Prediction], bool, bool]:
        """One page, newest first, plus whether newer and older predictions exist.

        Cursors are creation sequence numbers (`older_than`, `newer_than`), so a page stays
        stable while new predictions arrive. `created_after` is inclusive, `created_before`
        exclusive, both in epoch seconds on the provider's clock. `others`: every other key's
        predictions on that surface instead of this key's.
        """
        with self._lock:
            size = page_size or self._config.list_page_size
            if others:
                owned = sorted(
                    (
                        p
                        for (space, owner), ps in self._by_owner.items()
                        if space == namespace and owner != key
                        for p in ps
                    ),
                    key=lambda p: p.seq,
                )
            else:
                owned = self._by_owner.get((namespace, key), [])
            matching = [
                p
                for p in owned
                if (created_after is None or self.provider_time(p.created) >= created_after)
                and (created_before is None or self.provider_time(p.created) < created_before)
            ]
            if older_than is not None:
                page = [p for p in matching if p.seq < older_than][-size:]
            elif newer_than is not None:
                page = [p for p in matching if p.seq > newer_than][:size]
            else:
                page = matching[-size:]
            if not page:
                return [], False, False
            low, high = page[0].seq, page[-1].seq
            has_newer = any(p.seq > high for p in matching)
            has_older = any(p.seq < low for p in matching)
            return list(reversed(page)), has_newer, has_older

    # -- files ----------------------------------------------------------------------------

    def sign(self, prediction_id: str, index: int, ext: str, expires: int) -> str:
        message = f"{prediction_id}/{index}.{ext}/{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def signature_ok(
        self, prediction_id: str, index: int, ext: str, expires: int, signature: str
    ) -> bool:
        return hmac.compare_digest(self.sign(prediction_id, index, ext, expires), signature)

    def image_bytes(self, prediction: Prediction, index: int) -> bytes:
        width, height = scaled_size(prediction.size, self._config.max_side)
        return self.images.get_or_render(
            (prediction.id, index),
            lambda: render_image(
                prediction.prompt, prediction.seed, index, width, height, prediction.ext
            ),
        )

    # -- webhooks -------------------------------------------------------------------------

    def webhook_secret(self, key: str) -> str:
        """The account's webhook signing secret (`GET /v1/webhooks/default/secret`): stable for
        a key, different for every key and every simulator."""
        digest = hmac.new(self._secret, b"webhook-secret:" + key.encode(), hashlib.sha256)
        return "whsec_" + base64.b64encode(digest.digest()[:24]).decode()

    def webhooks_due(self, now: float | None = None) -> tuple[list[tuple[Prediction, str]], float]:
        """The webhook events that have happened and were not sent yet, marked as sent, and
        the instant the next known one is due (infinity when none is waiting).

        Events are `start` (the prediction started) and `completed` (it reached a terminal
        state, sent `webhook_delay` later), each only when `webhook_events_filter` asks for it
        (no filter: every event). `output` and `logs` events are not simulated.
        """
        with self._lock:
            now = self.now() if now is None else now
            delay = self._config.webhook_delay
            due: list[tuple[Prediction, str]] = []
            next_at = math.inf
            for pid, p in list(self._webhook_watch.items()):
                wanted = p.webhook_events_filter
                wants_start = (wanted is None or "start" in wanted) and (
                    "start" not in p.webhooks_sent
                )
                wants_end = wanted is None or "completed" in wanted
                snap = self._snapshot(p, now)
                if wants_start and snap.started is not None:
                    p.webhooks_sent.add("start")
                    due.append((p, "start"))
                elif wants_start and not snap.terminal:
                    next_at = min(next_at, p.start)
                if not snap.terminal:
                    next_at = min(next_at, p.terminal_at() + delay)
                    continue
                assert snap.completed is not None
                if wants_end and snap.completed + delay > now:
                    next_at = min(next_at, snap.completed + delay)
                    continue
                if wants_end:
                    p.webhooks_sent.add("completed")
                    due.append((p, "completed"))
                del self._webhook_watch[pid]
            return due, next_at

    def note_webhook(self, answer: str) -> None:
        """One webhook request made, and what it got: an HTTP status, or "error"."""
        with self._lock:
            self._counters.webhooks_sent += 1
            answers = self._counters.webhook_answers
            answers[answer] = answers.get(answer, 0) + 1

    # -- counters -------------------------------------------------------------------------

    def note_poll(self, *, via_polling_url: bool = False) -> None:
        with self._lock:
            self._counters.polls += 1
            if via_polling_url:
                self._counters.polls_via_polling_url += 1

    def note_list(self) -> None:
        with self._lock:
            self._counters.lists += 1

    def note_download(self, *, with_auth: bool) -> None:
        with self._lock:
            self._counters.downloads += 1
            if with_auth:
                self._counters.downloads_with_auth += 1

    def note_file(self, path: str, body: bytes) -> None:
        with self._lock:
            self._counters.files[path] = hashlib.sha256(body).hexdigest()

    def note_served(self, prediction: Prediction, index: int) -> None:
        """One of its output files went out whole, with 200."""
        with self._lock:
            prediction.files_served.add(index)

    def note_status(self, status: int) -> None:
        with self._lock:
            counts = self._counters.status_codes
            counts[str(status)] = counts.get(str(status), 0) + 1
            if status == 429:
                self._counters.rate_limited += 1

    def note_dropped(self) -> None:
        with self._lock:
            self._counters.dropped_creates += 1

    def stats(self) -> dict[str, Any]:
        """Counters and generation records as plain JSON-able copies."""
        with self._lock:
            now = self.now()
            counters = self._counters
            generations = []
            in_flight: dict[str, int] = {}
            for prediction in self._predictions.values():
                snap = self._snapshot(prediction, now)
                if snap.terminal:
                    self._settle(prediction, snap)
                else:
                    in_flight[prediction.key] = in_flight.get(prediction.key, 0) + 1
                generations.append(
                    {
                        "id": prediction.id,
                        "style": prediction.style,
                        "namespace": prediction.namespace,
                        "model": prediction.model,
                        "route": prediction.route,
                        "created_at": self.wall(prediction.created),
                        "started_at": self.wall(prediction.start),
                        "completed_at": self.wall(prediction.end),
                        "duration": prediction.duration,
                        "queue_delay": prediction.start - prediction.created,
                        "outcome": prediction.outcome,
                        "expired_early": prediction.expired_early,
                        "phase": snap.phase,
                        "ended_at": None if snap.completed is None else self.wall(snap.completed),
                        # Cancel-After, as an absolute time (None when the create had none)
                        "deadline": (
                            None if prediction.deadline is None else self.wall(prediction.deadline)
                        ),
                        # as sent, even once the provider removed it from its answers
                        "input": copy.deepcopy(prediction.input),
                        # which account, without the key itself in a report or a log
                        "key_hash": hashlib.sha256(prediction.key.encode()).hexdigest()[:12],
                        "num_outputs": prediction.num_outputs,
                        "files_served": len(prediction.files_served),
                        "billed": not prediction.refunded,
                    }
                )
            return {
                "creates": counters.creates,
                "creates_by_input": dict(counters.creates_by_input),
                "creates_by_route": dict(counters.creates_by_route),
                "polls": counters.polls,
                "polls_via_polling_url": counters.polls_via_polling_url,
                "cancels": counters.cancels,
                "lists": counters.lists,
                "downloads": counters.downloads,
                "downloads_with_auth": counters.downloads_with_auth,
                "status_codes": dict(counters.status_codes),
                "rate_limited": counters.rate_limited,
                "max_in_flight_seen": dict(counters.max_in_flight_seen),
                "in_flight": in_flight,
                "files": dict(counters.files),
                "dropped_creates": counters.dropped_creates,
                "faults_injected": counters.faults_injected,
                "faults": dict(counters.faults),
                "auth_failures": counters.auth_failures,
                "webhooks_sent": counters.webhooks_sent,
                "webhook_answers": dict(counters.webhook_answers),
                "credits_spent": {key: round(v, 6) for key, v in self._spent.items()},
                # the times above are on the true clock; answers show them this much later
                "clock_offset": self._config.clock_offset,
                "generations": generations,
            }
