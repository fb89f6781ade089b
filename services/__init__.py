"""The five Fruits! services, one package each: ``python -m services.<name>``."""

import os

# Each service does small matrix products per batch on a machine it shares with Kafka
# and four other services: BLAS worker threads would only spin and contend. Set before
# numpy is first imported (by the service modules below this package).
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
