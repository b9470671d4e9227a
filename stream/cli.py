"""The ``kairos`` command: worker, demo, console, simulate, train, evaluate, settings, schema.

Subcommands import what they need only when run, so ``kairos --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

log = logging.getLogger("kairos")

# sysexits.h EX_CONFIG: the configuration (here the topic layout on the broker) is wrong; restarting
# will not help, so an orchestrator should not crash-loop on it silently.
EXIT_CONFIG = 78

USAGE = """kairos <command> [options]

commands:
  worker     run the stream worker (starts the embedded broker when none is configured)
  demo       embedded broker + worker + simulated shop; prints pushes (KAIROS_DEMO_SECONDS=N stops it)
  simulate   run the simulated shop against a broker, replay a dataset, or write events to a file
  train      train a GRU session model from event logs        (kairos train --help)
  evaluate   evaluate a model and the baselines on test data   (kairos evaluate --help)
  console    serve the live page for marketing: pushes, decisions, outcomes (kairos console --help)
  erase      erase users on request (GDPR): a consent tombstone per user id (kairos erase --help)
  settings   print the effective settings (secrets masked)
  schema     print the JSON Schemas of the wire contract
"""


def _worker(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kairos worker", description="Run the Kairos stream worker.")
    parser.add_argument(
        "--web-port", type=int, help="Port for /metrics, /healthz, /readyz (default: settings)."
    )
    args = parser.parse_args(argv)
    if args.web_port is not None and not 0 <= args.web_port <= 65535:
        parser.error(f"--web-port must be 0-65535, got {args.web_port}")

    from stream.broker import EmbeddedBroker
    from stream.logs import configure_logging
    from stream.settings import Settings, warn_unknown_variables
    from stream.topics import TopicLayoutError, check_partitions, ensure_topics

    settings = Settings()
    if args.web_port is not None:
        settings.worker.web_port = args.web_port
    configure_logging(settings.log.level, settings.log.json_format)
    warn_unknown_variables()
    broker = None
    if not settings.kafka.bootstrap_servers:
        broker = EmbeddedBroker(settings.kafka.embedded_host, settings.kafka.embedded_port).start()
        settings.kafka.bootstrap_servers = broker.bootstrap
        # A warning, not news: in production an empty KAIROS_KAFKA__BOOTSTRAP_SERVERS (a compose file
        # interpolating an unset variable) would otherwise quietly run against a broker that keeps
        # nothing past this process.
        log.warning(
            "no broker configured (KAIROS_KAFKA__BOOTSTRAP_SERVERS is empty): started the embedded "
            "in-memory broker on %s, for development only; its topics are lost when this process ends",
            broker.bootstrap,
        )
    try:
        ensure_topics(settings)
        try:
            check_partitions(settings)
        except TopicLayoutError as exc:
            log.critical("refusing to start: %s", exc)
            print(f"kairos worker: refusing to start: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        from stream.app import Worker

        Worker(settings).run()
    finally:
        if broker is not None:
            broker.stop()
    return 0


def _demo(argv: list[str]) -> int:
    from stream.demo import demo_main

    return demo_main(argv)


def _console(argv: list[str]) -> int:
    from stream.console.server import console_main

    return console_main(argv)


def _simulate(argv: list[str]) -> int:
    from stream.sim_cli import simulate_main

    return simulate_main(argv)


def _train(argv: list[str]) -> int:
    from model.cli import train_main

    return train_main(argv)


def _evaluate(argv: list[str]) -> int:
    from model.cli import evaluate_main

    return evaluate_main(argv)


def _settings(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kairos settings", description="Print the effective settings.")
    parser.add_argument(
        "--markdown", action="store_true", help="Print the documentation table of every setting."
    )
    args = parser.parse_args(argv)
    from stream.settings import Settings, settings_markdown

    print(settings_markdown() if args.markdown else Settings().model_dump_json(indent=2))
    return 0


def _schema(argv: list[str]) -> int:
    from stream import contract
    from stream.dead_letters import DeadLetter

    models: list[tuple[str, type[contract.BaseModel]]] = [
        ("event", contract.Event),
        ("catalog", contract.CatalogUpdate),
        ("consent", contract.ConsentUpdate),
        ("push", contract.Push),
        ("decision", contract.Decision),
        ("dead_letter", DeadLetter),
    ]
    schemas = {name: model.model_json_schema() for name, model in models}
    print(json.dumps(schemas, indent=2))
    return 0


def _erase(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kairos erase",
        description=(
            "Erase users: writes a tombstone (null value) keyed by each user id to the consent topic. "
            "The worker that owns the user deletes the user's state (RocksDB and a changelog tombstone), "
            "pending timers, held pushes and index entries; the compacted consent topic then forgets "
            "the user's consent record too. Pushes already emitted are not recalled."
        ),
    )
    parser.add_argument("user_ids", nargs="*", help="User ids to erase.")
    parser.add_argument("--file", help="A file with one user id per line ('-' for standard input).")
    args = parser.parse_args(argv)

    from confluent_kafka import Producer

    from stream.contract import ContractError
    from stream.settings import Settings

    users = list(args.user_ids)
    if args.file:
        try:
            source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
            with source:
                users += [line.strip() for line in source if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:  # a clear refusal, not a traceback; nothing written
            print(f"kairos erase: cannot read the ids from {args.file!r}: {exc}", file=sys.stderr)
            return 2
    if not users:
        parser.error("no user id given")
    from stream.admission import check_id

    try:
        for user in users:
            check_id(user)
    except ContractError as exc:
        print(f"kairos erase: {exc}", file=sys.stderr)
        return 2
    settings = Settings()
    if not settings.kafka.bootstrap_servers:
        print(
            "kairos erase: set KAIROS_KAFKA__BOOTSTRAP_SERVERS (the cluster the workers read)",
            file=sys.stderr,
        )
        return 2
    # The Java client's default partitioner, like every Kairos producer: the tombstone must land on
    # the user's partition (the worker refuses one that does not).
    producer = Producer({**settings.kafka.confluent_config(), "partitioner": "murmur2_random"})
    for user in users:
        producer.produce(settings.topics.consent, value=None, key=user.encode("utf-8"))
    remaining = producer.flush(30)
    if remaining:
        print(f"kairos erase: {remaining} tombstones not acknowledged", file=sys.stderr)
        return 1
    print(json.dumps({"erase_requested": len(users), "topic": settings.topics.consent}))
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "worker": _worker,
    "demo": _demo,
    "simulate": _simulate,
    "train": _train,
    "evaluate": _evaluate,
    "settings": _settings,
    "schema": _schema,
    "erase": _erase,
    "console": _console,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kairos`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"kairos: unknown command {args[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    if args[0] not in ("worker", "console"):  # those two warn once their logging is set up
        from stream.settings import warn_unknown_variables

        warn_unknown_variables()
    try:
        return command(args[1:])
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        # A setting out of range is refused before anything starts, named by its variable, not
        # as a traceback (restarting will not help: EX_CONFIG).
        from stream.settings import settings_errors

        lines = "\n".join(f"  {line}" for line in settings_errors(exc))
        print(f"kairos {args[0]}: invalid settings:\n{lines}", file=sys.stderr)
        return EXIT_CONFIG
    except SettingsError as exc:  # a dict or list option whose value is not JSON
        from stream.settings import settings_parse_errors

        lines = "\n".join(f"  {line}" for line in settings_parse_errors(exc))
        print(f"kairos {args[0]}: invalid settings:\n{lines}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
