"""``multiprocessing.Pool`` on the cluster, as Ray's ``ray.util.multiprocessing``."""

from nbcluster.util.multiprocessing.pool import AsyncResult as AsyncResult
from nbcluster.util.multiprocessing.pool import Pool as Pool
from nbcluster.util.multiprocessing.pool import TimeoutError as TimeoutError

__all__ = ["AsyncResult", "Pool", "TimeoutError"]
