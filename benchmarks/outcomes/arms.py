"""The pushers under test in the push-outcomes benchmark, each driven in lock step: the real Kairos
worker process (:class:`KairosArm`) and the baseline pushers on the broker (:class:`BaselineArm`),
built by name by :func:`make_arms`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.baselines import Baseline, BrokerPusher, CartAbandonmentPusher, PopularPromotionPusher
from benchmarks.marketer_rules import MarketerRulesPusher
from benchmarks.outcomes.broker_io import Publisher
from benchmarks.outcomes.config import BenchConfig
from benchmarks.outcomes.training import ensure_model
from stream.policy_config import PolicyConfig
from stream.settings import Settings
from tests.support.worker import PRODUCTION_DECISIONS, WorkerProcess, metric_sum


class Arm:
    """A pusher under test, driven in lock step."""

    name = ""
    needs_clock = False

    def start(self, settings: Settings, run_dir: Path) -> None:
        """Start after the initial catalog and consent are on the broker."""

    def before_events(self, pub: Publisher, now: float) -> None:
        """The step's catalog changes are on the broker, its events not yet: take the changes in."""

    def after_events(self, pub: Publisher, now: float) -> None:
        """The step's catalog changes and events are on the broker: catch up, emit what is due at ``now``."""

    def diagnostics(self) -> dict[str, float]:
        """Pusher-specific counters for the report (none by default)."""
        return {}

    def stop(self) -> None:
        """Stop and release everything."""


class KairosArm(Arm):
    """The real worker process on the broker."""

    name = "kairos"
    needs_clock = True

    def __init__(self, cfg: BenchConfig, model_dir: Path, tick_seconds: float = 0.05) -> None:
        self.cfg = cfg
        self.model_dir = model_dir
        self.tick = tick_seconds
        self.worker: WorkerProcess | None = None
        self.env: dict[str, str] = {}

    def start(self, settings: Settings, run_dir: Path) -> None:
        self.env = {
            **PRODUCTION_DECISIONS,  # not the tests' defaults (they switch the active rule off)
            "KAIROS_WORKER__CLOCK": "event",
            "KAIROS_WORKER__TICK_SECONDS": str(self.tick),
            "KAIROS_LOG__LEVEL": "WARNING",
            "KAIROS_POLICY__HOLDOUT_SHARE": str(self.cfg.holdout_share),
            "KAIROS_POLICY__HOLDOUT_SALT": self.cfg.holdout_salt,
            **self.cfg.kairos_env,
        }
        assert settings.kafka.bootstrap_servers
        self.worker = WorkerProcess(
            settings.kafka.bootstrap_servers,
            run_dir / "state",
            self.model_dir,
            env=self.env,
            app_id="kairos-bench",
            log_path=run_dir / "worker.log",
        ).start()
        self.worker.wait_ready(120)
        time.sleep(2.0)  # the initial consent and catalog are read before the first events

    def before_events(self, pub: Publisher, now: float) -> None:
        # The worker's catalog view holds the step's changes before its events arrive, so each is
        # announced where its partition's stream reaches its time: the same place in every run.
        # Removals and refused records count as taken in (none in this world, but no hang if any).
        catalog = pub.topics.catalog
        counters = ("kairos_catalog_updates_total", "kairos_catalog_removals_total")
        self._wait_for(pub.counts[catalog], counters, dead_letters_of=catalog)

    def after_events(self, pub: Publisher, now: float) -> None:
        # Pushes are produced (and acknowledged) before the events that caused them are counted
        # (refused events too: outcome "dead_letter").
        self._wait_for(pub.counts[pub.topics.events], ("kairos_events_total",))

    def _wait_for(self, target: int, metrics: tuple[str, ...], dead_letters_of: str | None = None) -> None:
        """Until the worker's ``metrics`` (plus the topic's dead letters) reach ``target``."""
        assert self.worker is not None
        worker = self.worker

        def taken() -> float:
            # One scrape per poll: each renders the worker's whole registry on its event loop.
            _, body = worker.get("/metrics")
            refused = (
                metric_sum(body, "kairos_dead_letters_total", topic=dead_letters_of) if dead_letters_of else 0
            )
            return sum(metric_sum(body, m) for m in metrics) + refused

        deadline = time.monotonic() + 120
        metric = " + ".join(metrics)
        while taken() < target:
            if self.worker.proc is not None and self.worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.worker.tail_log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker's {metric} did not reach {target}: {self.worker.tail_log()}")
            time.sleep(0.02)

    def diagnostics(self) -> dict[str, float]:
        """The worker's suppression counters by ``trigger/reason`` (why candidates were not pushed)."""
        out: dict[str, float] = {}
        if self.worker is None:
            return out
        _, body = self.worker.get("/metrics")
        for line in body.splitlines():
            if not line.startswith("kairos_push_suppressions_total{"):
                continue
            head, _, value = line.rpartition(" ")
            labels = dict(part.split("=", 1) for part in head[head.index("{") + 1 : -1].split(","))
            key = f"{labels['trigger'].strip(chr(34))}/{labels['reason'].strip(chr(34))}"
            if float(value) > 0:
                out[key] = out.get(key, 0.0) + float(value)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()


class BaselineArm(Arm):
    """A baseline pusher (``benchmarks/baselines.py``) reading and writing the broker."""

    def __init__(self, name: str, make: Callable[[], Baseline]) -> None:
        self.name = name
        self.make = make
        self.pusher: BrokerPusher | None = None

    def start(self, settings: Settings, run_dir: Path) -> None:
        self.pusher = BrokerPusher(settings, self.make())

    def after_events(self, pub: Publisher, now: float) -> None:
        assert self.pusher is not None
        self.pusher.sync(dict(pub.counts))
        self.pusher.emit(now)

    def stop(self) -> None:
        if self.pusher is not None:
            self.pusher.close()
            self.pusher = None


def make_arms(cfg: BenchConfig, names: list[str]) -> list[Arm]:
    """The arms to run, in order."""
    holdout = cfg.holdout()
    ttl = PolicyConfig.model_validate({}).push_ttl_seconds
    arms: list[Arm] = []
    for name in names:
        if name == "kairos":
            arms.append(KairosArm(cfg, ensure_model(cfg)))
        elif name == "popular_promotion":
            arms.append(
                BaselineArm(name, lambda: PopularPromotionPusher(holdout, hour_utc=18.0, ttl_seconds=ttl))
            )
        elif name == "cart_abandonment_1h":
            arms.append(BaselineArm(name, lambda: CartAbandonmentPusher(holdout, 3600.0, ttl)))
        elif name == "marketer_rules":
            arms.append(BaselineArm(name, lambda: MarketerRulesPusher(holdout, 3600.0, ttl)))
        else:
            raise ValueError(f"unknown arm {name!r}")
    return arms


ARMS = ["kairos", "popular_promotion", "cart_abandonment_1h", "marketer_rules"]
