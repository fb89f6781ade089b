"""``fruits``: the command line of Fruits! (``fruits --help``).

Settings come from FRUITS_* environment variables (see the README); the defaults
talk to the embedded local stack started by ``make up``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.records import Prediction
from core.settings import MissingCredentials, get_settings
from tools import FRUITS360_SAMPLE, GROCERYSTORE_SAMPLE
from training.defaults import AUGMENTED_COPIES, EMPTY_SCENES, SYNTHETIC_PER_CLASS

CLIENT = "client"
"""Who ``produce`` and ``consume`` are on Kafka (and S3): a user's tool, writing photos, reading predictions."""
OPERATOR = "admin"
"""Who the operators' commands are (train, model, evaluate, demo): they read and write the model
store, and demo provisions topics. FRUITS_IDENTITY overrides either."""


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


def cmd_produce(args: argparse.Namespace) -> int:
    from core.datasets import image_files
    from core.photos import LocationNotRemovable
    from tools.client import PhotoSender
    from core.kafka import check_reachable

    settings = get_settings().acting_as(CLIENT)
    # The arguments first: a typo in a path or region is not a Kafka problem.
    files = image_files(args.paths)
    if not files:
        print("fruits produce: error: no image files found in the given paths", file=sys.stderr)
        return 2
    if args.region not in settings.region_buckets:
        known = ", ".join(sorted(settings.region_buckets))
        print(f"fruits produce: error: unknown region {args.region!r} (configured: {known})", file=sys.stderr)
        return 2
    check_reachable(settings)
    sender = PhotoSender(settings, region=args.region, user_id=args.user_id)
    started = time.monotonic()
    skipped = 0
    with tqdm(files, desc="produce", unit="photo", disable=args.quiet) as bar:
        for index, path in enumerate(bar):
            if args.rate:
                time.sleep(max(0.0, started + index / args.rate - time.monotonic()))
            try:
                photo_id = sender.send_file(path)
            except LocationNotRemovable as exc:  # never send a location we were asked to remove
                skipped += 1
                tqdm.write(f"skipped {path}: {exc}", file=sys.stderr)
                continue
            if args.print_ids:
                tqdm.write(f"{photo_id}\t{path}")
    sender.flush()
    print(f"produced {len(files) - skipped} photo events to {settings.topic_photos}", file=sys.stderr)
    if skipped:
        print(f"fruits produce: {skipped} file(s) skipped, not sent (see above)", file=sys.stderr)
        return 1
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from tools.client import PredictionReader

    reader = PredictionReader(get_settings().acting_as(CLIENT), from_beginning=args.from_beginning)
    count = 0
    try:
        for prediction in reader.predictions(timeout=args.timeout):
            if args.json:
                print(json.dumps(prediction.to_avro(), default=_json_default), flush=True)
            else:
                print(f"{prediction.photo.photo_id}  {prediction_line(prediction)}", flush=True)
            count += 1
            if args.count and count >= args.count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
    return 0


def prediction_line(prediction: Prediction) -> str:
    """What a person reads of a prediction: the type, or the three likeliest when unsure."""
    if prediction.fruit_type is None:  # written before fruit types (schema v1)
        return f"{prediction.label} ({prediction.confidence:.0%})"
    if prediction.unsure:
        likeliest = " · ".join(f"{t.label} {t.confidence:.0%}" for t in prediction.top5_types[:3])
        return f"unsure: {likeliest}"
    return f"{prediction.fruit_type} ({prediction.type_confidence:.0%}), {prediction.label}"


def cmd_train(args: argparse.Namespace) -> int:
    from core.featurizer import Featurizer
    from core.lake import training_features_writer
    from core.model import ModelStore
    from core.s3 import check_bucket, s3_client
    from training.trainer import TrainingData, train

    settings = get_settings().acting_as(OPERATOR)
    client = s3_client(settings)
    check_bucket(client, settings.model_bucket, settings.s3_endpoint_url)  # before minutes of featurizing
    check_bucket(client, settings.lake_bucket, settings.s3_endpoint_url)  # the labelled features go there
    if args.with_feedback and args.engine == "spark":
        raise SystemExit("fruits train: --with-feedback trains with the local engine only (drop --engine spark)")
    feedback = None
    if args.with_feedback:
        from training.feedback import from_lake

        feedback, selection = from_lake(settings)
        left_out = ", ".join(f"{count} {why}" for why, count in selection.left_out.items()) or "none"
        print(f"feedback: {len(selection.photos)} photos ({selection.right} confirmed, {selection.corrected} "
              f"corrected); left out: {left_out}")  # fmt: skip
    data = TrainingData(
        args.data_dir,
        grocerystore=None if args.no_grocerystore else args.grocerystore,
        synthetic_per_class=args.synthetic_per_class,
        empty_scenes=args.empty_scenes,
        augmented_copies=args.augmented_copies,
        per_class=args.per_class,
        seed=args.seed,
        feedback=feedback,
    )
    if args.engine == "spark":
        from spark.train_job import train_with_spark  # needs the `spark` extra and `make spark-jars`
        from core.lake import packed_images_uri
        from training.packing import is_packed, pack_training_data

        if args.upload:
            pack_training_data(settings, data, with_test=not args.no_evaluate)
        elif not is_packed(settings, data):
            raise SystemExit(
                f"the training set packed in {packed_images_uri(settings, 'Training')} is not the one these options "
                "describe (or there is none): pack it with --upload"
            )
        bundle = train_with_spark(
            settings, min_explained_variance=args.min_explained_variance, evaluate=not args.no_evaluate
        )
    else:
        bundle = train(
            data,
            Featurizer(settings.featurizer_path),
            min_explained_variance=args.min_explained_variance,
            evaluate=not args.no_evaluate,
            save_features=training_features_writer(client, settings),
        )
    store = ModelStore(client, settings.model_bucket)
    store.save(bundle, make_current=not args.no_publish)
    print(bundle.manifest.summary() + ("" if args.no_publish else f"; now current in s3://{settings.model_bucket}"))
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    from core.model import ModelStore
    from core.s3 import check_bucket, s3_client

    settings = get_settings().acting_as(OPERATOR)
    client = s3_client(settings)
    check_bucket(client, settings.model_bucket, settings.s3_endpoint_url)
    store = ModelStore(client, settings.model_bucket)
    if args.action == "list":
        print_bundles(store)
    elif args.action == "promote":
        if args.version not in store.versions():
            raise ValueError(f"no bundle {args.version!r} in s3://{settings.model_bucket} (`fruits model list`)")
        store.set_current(args.version)
        print(f"bundle {args.version} is current; reduce picks it up within {settings.model_refresh_seconds:g} s")
    else:
        version = store.rollback()
        print(f"rolled back: bundle {version} is current again")
    return 0


def print_bundles(store: Any) -> None:
    """One line per bundle, oldest first: whether it is current, was current, or a candidate."""
    current, previous = store.current_version(), store.previous_versions()
    print(f"{'version':<24} {'status':<10} {'engine':<10} {'k':>5} {'classes':>7} {'evaluation':>10}  created")
    for version in store.versions():
        status = "current" if version == current else "previous" if version in previous else "candidate"
        try:
            manifest = store.load_manifest(version)
        except ValueError as exc:  # an unreadable bundle is listed, not fatal
            print(f"{version:<24} {status:<10} unreadable: {exc}")
            continue
        scored = f"{100 * manifest.evaluation.top1_accuracy:.2f} %" if manifest.evaluation else "—"
        print(
            f"{version:<24} {status:<10} {manifest.trained_on.engine:<10} {manifest.pca.k:>5} "
            f"{manifest.classifier.classes:>7} {scored:>10}  {manifest.created_at or '?'}"
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tools.evaluate import run_evaluate

    # An operator's job: it reads the model store offline, and dead letters through the pipeline.
    settings = get_settings().acting_as(OPERATOR)
    return run_evaluate(settings, args.dirs, args.offline, args.bundle, args.rate, args.json)


def cmd_demo(args: argparse.Namespace) -> int:
    from tools.demo import run_demo

    return run_demo(get_settings().acting_as(OPERATOR), args.data, args.limit, args.rate)


def cmd_services(args: argparse.Namespace) -> int:
    from tools.services import GATEWAY, Supervisor, start_service, start_services, stop_services, wait_ready
    from tools.stack.prometheus_server import publish_replicas

    settings = get_settings()  # each service acts as itself (tools.services)
    log_dir = settings.state_dir / "logs"
    # SIGTERM stops the services like Ctrl-C does, instead of orphaning them.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        services = start_services(log_dir, replicas=dict(args.replicas))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.gateway:
        try:
            services[GATEWAY] = start_service(GATEWAY, log_dir)
            wait_ready(services[GATEWAY])
        except (RuntimeError, TimeoutError) as exc:
            stop_services(services)
            print(f"fruits services: error: the gateway did not start: {exc}", file=sys.stderr)
            return 1
        print(f"gateway on http://{settings.gateway_host}:{settings.gateway_port}/", file=sys.stderr)
    print(f"services running (logs in {log_dir}); one that exits is started again; Ctrl-C stops them", file=sys.stderr)
    # The local Prometheus (`make monitor`) scrapes the replicas beyond the first while they run.
    running = [(service.name, service.slot or 0, service.metrics_port) for service in services.values()]
    publish_replicas(settings, [(name, slot, port) for name, slot, port in running if port])
    supervisor = Supervisor(services, log_dir)
    try:
        while True:
            supervisor.check()
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        stop_services(supervisor.services)
        publish_replicas(settings, [])
        if supervisor.restarts:
            print(f"restarts: {dict(supervisor.restarts)}", file=sys.stderr)


def replicas_of(text: str) -> tuple[str, int]:
    """An argparse type: ``featurize=2`` → ("featurize", 2)."""
    name, sep, count = text.partition("=")
    if not sep or not count.isdigit():
        raise argparse.ArgumentTypeError(f"expected SERVICE=N, got {text!r}")
    return name, int(count)


def add_produce(commands: argparse._SubParsersAction) -> None:
    produce = commands.add_parser("produce", help="send photos (files or folders) as photo events")
    produce.add_argument("paths", nargs="+", type=Path, help="image files or folders (searched recursively)")
    produce.add_argument("--region", default="eu", help="user's data region, selects the bucket (default: eu)")
    produce.add_argument("--user-id", default="cli-user", help="user id put in the events (default: cli-user)")
    produce.add_argument("--rate", type=positive_float, help="photos per second (default: as fast as possible)")
    produce.add_argument("--print-ids", action="store_true", help="print 'photo_id<TAB>path' for each photo")
    produce.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    produce.set_defaults(func=cmd_produce)


def add_consume(commands: argparse._SubParsersAction) -> None:
    consume = commands.add_parser("consume", help="print predictions as they arrive")
    consume.add_argument("--json", action="store_true", help="one JSON object per line")
    consume.add_argument("--from-beginning", action="store_true", help="start at the oldest retained prediction")
    consume.add_argument("--count", type=positive_int, help="exit after this many predictions")
    consume.add_argument(
        "--timeout", type=positive_float, default=float("inf"), help="exit after this many seconds without a prediction"
    )
    consume.set_defaults(func=cmd_consume)


def add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train a model bundle from labelled images and make it current",
        description="Featurize Fruits-360 (DATA_DIR: Training/<label>/*.jpg, or the Training folder itself), "
        "GroceryStore's phone photos, synthetic photos made of the Fruits-360 specimens and empty scenes; fit "
        "the PCA, the calibrated classifier and its unsure threshold (out of fold), publish the bundle to the S3 "
        "model store. A Test/ folder beside Training/ is scored and the scores stored in the bundle.",
    )
    train.add_argument(
        "data_dir", nargs="?", type=existing_dir, default=FRUITS360_SAMPLE,
        help=f"Fruits-360 root or its Training folder (default: {FRUITS360_SAMPLE})",
    )  # fmt: skip
    train.add_argument(
        "--grocerystore", type=existing_dir, default=GROCERYSTORE_SAMPLE if GROCERYSTORE_SAMPLE.is_dir() else None,
        help=f"GroceryStore root or its train folder (default: {GROCERYSTORE_SAMPLE}, if there)",
    )  # fmt: skip
    train.add_argument("--no-grocerystore", action="store_true", help="train without the GroceryStore photos")
    train.add_argument(
        "--synthetic-per-class", type=non_negative_int, default=SYNTHETIC_PER_CLASS,
        help=f"synthetic photos per Fruits-360 class (default: {SYNTHETIC_PER_CLASS})",
    )  # fmt: skip
    train.add_argument(
        "--empty-scenes", type=non_negative_int, default=EMPTY_SCENES,
        help=f"scenes without fruit, trained as 'not ours' (default: {EMPTY_SCENES})",
    )  # fmt: skip
    train.add_argument(
        "--augmented-copies", type=non_negative_int, default=AUGMENTED_COPIES,
        help=f"augmented copies (crop, mirror, colour jitter) of each GroceryStore photo (default: {AUGMENTED_COPIES})",
    )  # fmt: skip
    train.add_argument("--seed", type=int, default=0, help="seed of the synthetic photos and augmented copies (default: 0)")
    train.add_argument(
        "--min-explained-variance",
        type=share,
        default=0.98,
        help="PCA keeps the fewest components explaining this share of variance (default: 0.98)",
    )
    train.add_argument(
        "--per-class", type=positive_int, help="use at most this many training images per class (quick runs)"
    )
    train.add_argument(
        "--with-feedback", action="store_true",
        help="also train on users' photos with the fruit type their feedback gave them (the lake's feedback table, "
        "latest verdict per photo: confirmed or corrected); the originals are read from their region buckets as this "
        "command's identity, only their features leave the region (README: Using it; local engine)",
    )  # fmt: skip
    train.add_argument("--no-evaluate", action="store_true", help="skip scoring the Test split")
    train.add_argument("--no-publish", action="store_true", help="store the bundle without making it current")
    train.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="local: featurize in this process (default); spark: a Spark job on FRUITS_SPARK_MASTER that reads "
        "the training images packed in Parquet on the lake (s3://<lake bucket>/<lake prefix>/training_images/), "
        "with the same recipe",
    )
    train.add_argument(
        "--upload",
        action="store_true",
        help="with --engine spark: first pack the training set these options describe (and the Test split) into "
        "Parquet on the lake; skipped when the packed set is the same already",
    )
    train.set_defaults(func=cmd_train)


def add_model(commands: argparse._SubParsersAction) -> None:
    model = commands.add_parser(
        "model",
        help="list the model bundles, make one current, or roll back",
        description="Manage the bundles of the S3 model store by hand. reduce switches to a newly current bundle "
        "within FRUITS_MODEL_REFRESH_SECONDS; predict follows the version each record was reduced with.",
    )
    actions = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every bundle, oldest first: current, previous (rollback targets) or candidate")
    promote = actions.add_parser("promote", help="make VERSION the current bundle (e.g. a held-back candidate)")
    promote.add_argument("version", help="bundle version, as `fruits model list` shows it")
    actions.add_parser("rollback", help="make the bundle that was current before the current one current again")
    model.set_defaults(func=cmd_model)


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="score folders of labelled photos: variety and type accuracy, unsure share, calibration",
        description="Each photo's truth comes from its folders: the GroceryStore layout (through the catalog's "
        "mapping), a Fruits-360 label (Apple Golden 1/), a fruit type (orange/, bell_pepper/) or not-a-fruit/ "
        "(what `python -m tools.nonfruit` writes). By default the photos go through the running pipeline; "
        "--offline scores them in this process with the same code.",
    )
    evaluate.add_argument("dirs", nargs="+", type=existing_dir, metavar="DIR", help="folders of labelled photos")
    evaluate.add_argument("--offline", action="store_true", help="featurize and classify here, not through Kafka")
    evaluate.add_argument("--bundle", help="with --offline: this bundle version instead of the current one")
    evaluate.add_argument(
        "--rate", type=positive_float, help="photos per second through the pipeline (default: as fast as possible)"
    )
    evaluate.add_argument("--json", type=Path, help="also write the reports as JSON to this file")
    evaluate.set_defaults(func=cmd_evaluate)


def add_demo(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the sample Test images through the five services and print accuracy and latency",
        description="Starts the five services, trains a model first if none is current, streams the Test "
        "images through Kafka and checks every prediction against the folder label.",
    )
    demo.add_argument(
        "--data", type=existing_dir, default=FRUITS360_SAMPLE, help=f"dataset root (default: {FRUITS360_SAMPLE})"
    )
    demo.add_argument("--limit", type=positive_int, help="use only this many Test images (spread over all classes)")
    demo.add_argument(
        "--rate",
        type=positive_float,
        default=40.0,
        help="photos per second (default: 40, about half of what 2 cores sustain, so latency is not queueing)",
    )
    demo.set_defaults(func=cmd_demo)


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from core.kafka import check_reachable
    from tools.deadletters import Selection, dead_letters, letter_line, replay, summary

    settings = get_settings().acting_as(OPERATOR)  # dead letters hold every user's photos
    selection = Selection(frozenset(args.reason), frozenset(args.stage), args.since, args.until)
    check_reachable(settings)
    if args.action == "list":
        letters = dead_letters(settings, selection)
        for found in letters:
            if args.json:
                letter = found.letter.to_avro() | {"position": found.position}
                letter["original_value"] = len(letter["original_value"] or b"")  # its size: it may be megabytes
                print(json.dumps(letter, default=_json_default), flush=True)
            else:
                print(letter_line(found), flush=True)
        print(f"{len(letters)} dead letters ({summary(letters)})", file=sys.stderr)
        return 0
    report = replay(settings, selection, dry_run=args.dry_run)
    verb = "would replay" if args.dry_run else "replayed"
    for found in report.replayed:
        print(f"{verb} {found.position} → {found.letter.source_topic}  {letter_line(found)}", flush=True)
    print(
        f"{verb} {len(report.replayed)} ({summary(report.replayed)}); skipped {len(report.already_replayed)} "
        f"replayed before, {len(report.already_predicted)} predicted since, {len(report.not_replayable)} "
        "without an original to replay",
        file=sys.stderr,
    )
    return 0


def add_dead_letters(commands: argparse._SubParsersAction) -> None:
    from tools.deadletters import parse_when

    def when(text: str) -> Any:
        try:
            return parse_when(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    letters = commands.add_parser(
        "dead-letters",
        help="list the dead letters, or replay them once their cause is fixed",
        description="list: the dead letters chosen by reason, stage and time of failure. replay: send their "
        "original records back to the topic they were read from; letters replayed before, and those whose photo "
        "got its prediction since, are skipped, so a replay duplicates nothing and can be run again.",
    )
    letters.add_argument("action", choices=("list", "replay"))
    letters.add_argument("--reason", action="append", default=[], help="only this reason (repeatable)")
    letters.add_argument("--stage", action="append", default=[], help="only this stage (repeatable)")
    letters.add_argument("--since", type=when, help="failed at or after: ISO time (UTC) or ago (30m, 2h, 7d)")
    letters.add_argument("--until", type=when, help="failed before: ISO time (UTC) or ago")
    letters.add_argument("--json", action="store_true", help="list: JSON lines (the original value as its size)")
    letters.add_argument("--dry-run", action="store_true", help="replay: only say what would be replayed")
    letters.set_defaults(func=cmd_dead_letters)


def cmd_users(args: argparse.Namespace) -> int:
    from services.gateway.store import Store, UserExists
    from tools.users import delete_user, what_stays

    if args.action != "list" and not args.name:
        print(f"fruits users {args.action}: error: name the user", file=sys.stderr)
        return 2
    # Deleting erases originals, which only admin may; adding and listing touch the store alone.
    settings = get_settings().acting_as(OPERATOR)
    store = Store(settings.gateway_database())
    if args.action == "add":
        if args.region is not None and args.region not in settings.region_buckets:
            known = ", ".join(sorted(settings.region_buckets))
            print(f"fruits users: error: unknown region {args.region!r} (configured: {known})", file=sys.stderr)
            return 2
        try:
            user, token = store.add_user(args.name, args.region)
        except UserExists as exc:
            print(f"fruits users: error: {exc}", file=sys.stderr)
            return 1
        print(token)
        print(
            f"user {user.name} added (id {user.user_id}, region {user.region or 'by position or default'}); "
            "the token above is shown once: the gateway keeps only its hash",
            file=sys.stderr,
        )
    elif args.action == "list":
        print(f"{'name':<24} {'user id':<20} {'region':<8} created")
        for user in store.users():
            print(f"{user.name:<24} {user.user_id:<20} {user.region or '—':<8} {user.created_at:%Y-%m-%d %H:%M:%S}Z")
    else:
        deleted = delete_user(settings, store, args.name)
        if deleted is None:
            print(f"fruits users: error: no user {args.name!r} (`fruits users list`)", file=sys.stderr)
            return 1
        objects = ", ".join(f"{count} in s3://{bucket}" for bucket, count in deleted.objects.items())
        print(f"deleted user {args.name}: their token, {deleted.photos} photos of history, stored photos: {objects}")
        print(what_stays(settings, deleted.user.user_id))
    return 0


def add_users(commands: argparse._SubParsersAction) -> None:
    users = commands.add_parser(
        "users",
        help="the HTTP gateway's users and their API tokens",
        description="add NAME: a new user; prints their API token once (only its hash is kept). list: the users. "
        "delete NAME: removes their token, their photo history and their stored photos (uploads and originals in "
        "every region bucket), and says what stays in the lake and on Kafka. The store: FRUITS_GATEWAY_DATABASE_URL "
        "(default: SQLite in FRUITS_STATE_DIR).",
    )
    users.add_argument("action", choices=("add", "list", "delete"))
    users.add_argument("name", nargs="?", help="the user (add, delete): 1 to 64 of a-z 0-9 . _ -")
    users.add_argument(
        "--region", help="add: keep this user's photos in REGION (default: by their position, else the default)"
    )
    users.set_defaults(func=cmd_users)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fruits",
        description="Fruits!: photos in on Kafka, fruit predictions out. "
        "Settings: FRUITS_* environment variables (README, 'Configuration').",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_produce, add_consume, add_train, add_model, add_evaluate, add_demo, add_dead_letters, add_users):
        add(commands)
    services = commands.add_parser(
        "services",
        help="run the five services in the foreground until Ctrl-C, starting again any that exits",
        description="Runs the five services as child processes, each replica on its own slot (FRUITS_INSTANCE_ID), "
        "and starts again, on the same slot, one that exits (after 1 s, doubling while it keeps exiting, up to 60 s).",
    )
    services.add_argument(
        "--replicas", action="append", type=replicas_of, default=[], metavar="SERVICE=N",
        help="run N replicas of SERVICE (they share its partitions; repeatable), e.g. --replicas featurize=2",
    )  # fmt: skip
    services.add_argument(
        "--gateway", action="store_true", help="also run the HTTP gateway (python -m services.gateway), supervised too"
    )
    services.set_defaults(func=cmd_services)
    return parser


def number_in(cast: Callable[[str], float], accepts: Callable[[float], bool], what: str) -> Callable[[str], float]:
    """An argparse type: ``cast`` the text, refuse a value ``accepts`` rejects ("must be {what}")."""

    def parse(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
        return value

    return parse


positive_float = number_in(float, lambda v: v > 0, "> 0")
positive_int = number_in(int, lambda v: v >= 1, "≥ 1")
non_negative_int = number_in(int, lambda v: v >= 0, "≥ 0")
share = number_in(float, lambda v: 0 < v <= 1, "in (0, 1]")


def existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        return args.func(args)
    except (ConnectionError, FileNotFoundError, ValueError, MissingCredentials) as exc:
        print(f"fruits {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
