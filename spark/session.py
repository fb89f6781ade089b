"""The SparkSession of every Fruits! Spark job, built from Settings.

Master URL, extra jars, S3A (endpoint, credentials, path-style access, encryption, the CA
it trusts) and Python come from configuration, so the same job runs with ``local[2]`` on a
laptop and under ``spark-submit`` on EMR or Kubernetes. Jars are never resolved at run time: locally they
are the ones ``make spark-jars`` put in ``FRUITS_SPARK_JARS_DIR``; on a cluster
``spark-submit --jars`` ships them (then set ``FRUITS_SPARK_JARS_DIR=``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.settings import LOCAL_TRUSTSTORE_PASSWORD, Settings, jaas_config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


KAFKA_GROUP_ID_PREFIX = "fruits-spark"
"""groupIdPrefix of the Kafka source: its consumer groups are ``fruits-spark-<uuid>-…`` (ACLs name the prefix)."""


class SparkSetupError(RuntimeError):
    """Spark cannot start as configured; the message says what to do."""


def extra_jars(settings: Settings) -> list[Path]:
    if not settings.spark_jars_dir:
        return []
    folder = Path(settings.spark_jars_dir)
    jars = sorted(folder.glob("*.jar"))
    if not jars:
        raise SparkSetupError(
            f"no jars in {folder}: run `make spark-jars` (or set FRUITS_SPARK_JARS_DIR= when spark-submit ships them)"
        )
    return jars


S3A_ENCRYPTION = {"AES256": "AES256", "aws:kms": "SSE-KMS"}
"""FRUITS_S3_SSE → S3A's fs.s3a.encryption.algorithm (its name of SSE-S3 is AES256 too)."""


def s3a_conf(settings: Settings) -> dict[str, str]:
    """Hadoop S3A options for the configured S3 (``spark.hadoop.`` prefixed): endpoint, this
    identity's credentials, the server-side encryption its writes request."""
    conf = {
        "fs.s3a.endpoint.region": settings.s3_region,
        "fs.s3a.path.style.access": str(settings.s3_path_style_access).lower(),
        # Objects are written whole by the jobs; no need for the SDK's extra checksums.
        "fs.s3a.create.checksum.algorithm": "",
        # Plain folders of Parquet: no _SUCCESS markers for readers to skip.
        "mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    }
    if settings.s3_endpoint_url:
        conf["fs.s3a.endpoint"] = settings.s3_endpoint_url
        conf["fs.s3a.connection.ssl.enabled"] = str(settings.s3_endpoint_url.startswith("https:")).lower()
    if credentials := settings.s3_credentials():
        # Otherwise S3A's default chain applies (environment, instance profile / IRSA on EMR and EKS).
        conf["fs.s3a.access.key"], conf["fs.s3a.secret.key"] = credentials
        conf["fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
    if settings.s3_sse:
        conf["fs.s3a.encryption.algorithm"] = S3A_ENCRYPTION[settings.s3_sse]
        if settings.s3_sse == "aws:kms" and settings.s3_sse_kms_key_id:
            conf["fs.s3a.encryption.key"] = settings.s3_sse_kms_key_id
    return {f"spark.hadoop.{key}": value for key, value in conf.items()}


def kafka_options(settings: Settings) -> dict[str, str]:
    """Options of Spark's Kafka source for the configured brokers, security protocol and this
    identity's credentials: ``Settings.kafka_security_config`` in the Java client's terms."""
    options = {
        "kafka.bootstrap.servers": settings.kafka_bootstrap_servers,
        "kafka.security.protocol": settings.kafka_security_protocol,
        "groupIdPrefix": KAFKA_GROUP_ID_PREFIX,
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        username, password = settings.kafka_credentials()
        options["kafka.sasl.mechanism"] = settings.kafka_sasl_mechanism
        options["kafka.sasl.jaas.config"] = jaas_config(settings.kafka_sasl_mechanism, username, password)
    if settings.kafka_security_protocol.endswith("SSL") and (ca := settings.kafka_ca_file()):
        # Else the JVM's own CAs (MSK, Confluent Cloud).
        options["kafka.ssl.truststore.type"] = "PEM"
        options["kafka.ssl.truststore.location"] = ca
    return options
def trust_options(settings: Settings) -> str | None:
    """JVM options that make S3A trust the local stack's CA (S3A has no CA option of its own: it
    uses the JVM's truststore); None when S3 is trusted through the JVM's own CAs."""
    ca = settings.s3_ca_file()
    if ca is None or not settings.s3_endpoint_url.startswith("https:"):
        return None
    if Path(ca) != settings.local_ca or not settings.local_truststore.is_file():
        log.warning(
            "S3A trusts the JVM's truststore only, not %s: import that CA into a truststore (keytool -importcert) "
            "and pass it in spark.driver.extraJavaOptions / spark.executor.extraJavaOptions",
            ca,
        )
        return None
    return (
        f"-Djavax.net.ssl.trustStore={settings.local_truststore.resolve()} "
        f"-Djavax.net.ssl.trustStorePassword={LOCAL_TRUSTSTORE_PASSWORD} -Djavax.net.ssl.trustStoreType=PKCS12"
    )


def spark_conf(settings: Settings, app_name: str) -> dict[str, str]:
    conf = {
        "spark.app.name": app_name,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Standard Parquet timestamps (not the legacy INT96) for every other reader of the lake.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        # Data source options shown in plans and the UI: the Kafka source's JAAS line holds a password.
        "spark.sql.redaction.options.regex": "(?i)url|jaas|password",
        **s3a_conf(settings),
    }
    if options := trust_options(settings):
        conf["spark.driver.extraJavaOptions"] = conf["spark.executor.extraJavaOptions"] = options
    if settings.spark_master:  # empty under spark-submit: its --master and --driver-memory apply
        conf["spark.master"] = settings.spark_master
        conf["spark.driver.memory"] = settings.spark_driver_memory
    if jars := extra_jars(settings):
        conf["spark.jars"] = ",".join(jar.resolve().as_uri() for jar in jars)
    if settings.spark_master.startswith("local"):
        # One machine: the venv's Python, loopback only, few shuffle partitions, no web UI
        # competing for the cores.
        conf["spark.pyspark.python"] = os.environ["PYSPARK_PYTHON"]
        conf["spark.driver.host"] = conf["spark.driver.bindAddress"] = "127.0.0.1"
        conf["spark.sql.shuffle.partitions"] = "4"
        conf["spark.ui.enabled"] = "false"
        conf["spark.ui.showConsoleProgress"] = "false"
    return conf


def spark_session(settings: Settings, app_name: str, extra: dict[str, str] | None = None) -> SparkSession:
    """Get or create the job's SparkSession. ``PYSPARK_PYTHON`` defaults to this
    interpreter (the project's venv), so executors' Python workers match the driver."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if settings.spark_master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in {**spark_conf(settings, app_name), **(extra or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark %s on %s", spark.version, settings.spark_master)
    return spark
