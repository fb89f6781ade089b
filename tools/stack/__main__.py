"""The embedded local stack: one Kafka 4 broker (KRaft, broker and controller in one
process) and one SeaweedFS server with its S3 gateway, on 127.0.0.1 only, provisioned
with the topics and buckets named in Settings.

  up         start what is not running, wait until it answers, create topics and buckets
  down       stop the servers started here (SIGTERM, then SIGKILL); --purge deletes data
  status     show what runs and where
  provision  create the missing topics and buckets on the configured servers, starting nothing
             (e.g. an existing cluster, or docker-compose's); with SASL also the ACLs
             (--no-acls: not), and the users on the stack's own broker
  acls       print every Kafka principal and its rights (tools/kafka_acls.py)

Data, logs (logs/kafka.log, logs/seaweedfs.log) and pid files live in FRUITS_STATE_DIR
(default .stack/). Kafka's jars are fetched once with Maven into .jars/kafka
(deploy/kafka/pom.xml). Ports follow the configured addresses: Kafka's controller uses
the broker port + 1, SeaweedFS's master, volume, filer and gRPC servers the 7 ports after
the S3 port. A server given in the environment (FRUITS_KAFKA_BOOTSTRAP_SERVERS,
FRUITS_S3_ENDPOINT_URL) is an existing one: it is not started, only checked and provisioned.

Kafka runs SASL_SSL by default: SCRAM logins over TLS with the stack's own CA, one user per
identity (passwords in FRUITS_STATE_DIR/secrets), ACLs from tools/kafka_acls.py; these
commands act as admin. FRUITS_KAFKA_SECURITY_PROTOCOL=PLAINTEXT starts the broker open.

Topics get the FRUITS_TOPIC_* settings (default: 3 replicas, min.insync.replicas 2), except
on the stack's own single broker (replication 1, min.insync.replicas 1).
"""

from __future__ import annotations

import sys

from core.settings import MissingCredentials, get_settings
from tools import kafka_acls, tool_parser
from tools.provision import ProvisionError
from tools.stack import print_status, provision_servers, start_stack, stop_stack
from tools.stack.supervisor import StackError, run_command


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser("python -m tools.stack", __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start Kafka and SeaweedFS if needed, wait for them, create topics and buckets")
    down = commands.add_parser("down", help="stop the servers started in the state dir, keeping their data")
    down.add_argument("--purge", action="store_true", help="also delete the state dir's data and logs")
    commands.add_parser("status", help="show what runs and where")
    provision = commands.add_parser(
        "provision", help="create the missing topics, buckets and (with SASL) ACLs on the configured servers"
    )
    provision.add_argument(
        "--no-acls", action="store_true", help="no ACLs (a cluster whose principals are not named after our identities)"
    )
    commands.add_parser("acls", help="print every Kafka principal and its rights")
    args = parser.parse_args(argv)
    settings = get_settings().acting_as(kafka_acls.ADMIN)
    commands = {
        "up": lambda: start_stack(settings),
        "down": lambda: stop_stack(settings, purge=args.purge),
        "provision": lambda: provision_servers(settings, acls=not args.no_acls),
        "status": lambda: print_status(settings),
        "acls": lambda: print(kafka_acls.render(settings)),
    }
    return run_command(commands[args.command], errors=(StackError, ProvisionError, MissingCredentials))


if __name__ == "__main__":
    sys.exit(main())
