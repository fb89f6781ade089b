"""Integration fixtures: a real Kafka broker and S3 server for the whole session.

The `stack` fixture starts its own stack in a temporary state dir on free ports, so it
never touches a developer's demo stack in .stack/ (nor its ports). A server whose
address is given in the environment (FRUITS_KAFKA_BOOTSTRAP_SERVERS,
FRUITS_S3_ENDPOINT_URL) is used as it is and only provisioned. Once the stack is up, the
fixture exports its addresses (and the topic settings it provisioned with: the
single-broker ones on its own broker) as FRUITS_* variables, so get_settings() and any
subprocess a test starts reach the same servers. On an existing cluster, set
FRUITS_TOPIC_REPLICATION_FACTOR and FRUITS_TOPIC_MIN_INSYNC_REPLICAS to suit it.

No identity is exported: each process a test starts is who its entry point says (a service,
``spark``, ``client`` for `fruits produce`), with its own credentials and ACLs. The fixtures'
settings act as ``admin`` (tests check what every principal wrote); a test that plays a
principal says so (``as_identity``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from core.featurizer import Featurizer
from core.model import ModelStore
from core.s3 import s3_client
from core.settings import PROJECT_ROOT, Settings, get_settings
from tests.integration import as_identity
from training.trainer import TrainingData, train
from tools.stack import kafka_server, seaweedfs_server, start_stack, stop_stack
from tools.stack.supervisor import free_port_block

KAFKA_ENV, S3_ENV = kafka_server.ENV, seaweedfs_server.ENV


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    # Addresses passed to Settings, not exported: start_stack starts what the
    # environment does not give, and the environment only gets them once it is up.
    kafka = os.environ[KAFKA_ENV] if KAFKA_ENV in os.environ else f"127.0.0.1:{free_port_block(kafka_server.PORTS)}"
    s3 = os.environ[S3_ENV] if S3_ENV in os.environ else f"https://127.0.0.1:{free_port_block(seaweedfs_server.PORTS)}"
    settings = Settings(state_dir=tmp_path_factory.mktemp("stack"), kafka_bootstrap_servers=kafka, s3_endpoint_url=s3)
    try:
        with pytest.MonkeyPatch.context() as env:
            # On its own broker, the single-broker topology: exported too, so that tests
            # and their subprocesses provisioning topics of their own use it.
            settings = start_stack(settings)
            env.setenv("FRUITS_TOPIC_REPLICATION_FACTOR", str(settings.topic_replication_factor))
            env.setenv("FRUITS_TOPIC_MIN_INSYNC_REPLICAS", str(settings.topic_min_insync_replicas))
            env.setenv(KAFKA_ENV, settings.kafka_bootstrap_servers)
            env.setenv(S3_ENV, settings.s3_endpoint_url)
            env.setenv("FRUITS_STATE_DIR", str(settings.state_dir))
            get_settings.cache_clear()
            yield settings
    finally:
        stop_stack(settings, purge=True)  # only what started in this state dir
        get_settings.cache_clear()


SAMPLE_DATA = PROJECT_ROOT.parent / "shared" / "data" / "fruits360"


@pytest.fixture(scope="session")
def trained(stack: Settings) -> Settings:
    """The stack with a current bundle trained on the sample, 30 images per class: a
    quick model that still recognises the sample's Test photos."""
    if not (SAMPLE_DATA / "Training").is_dir():
        pytest.skip(f"sample dataset not found at {SAMPLE_DATA}")
    settings = as_identity(get_settings(), "admin")
    store = ModelStore(s3_client(settings), settings.model_bucket)
    store.save(train(TrainingData(SAMPLE_DATA, per_class=30), Featurizer(settings.featurizer_path), evaluate=False))
    return settings
