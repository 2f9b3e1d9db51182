"""The notebook side of nbcluster: a Jupyter kernel whose session owns a cluster.

- ``app``: the kernel (an ``IPythonKernel``) that starts the head with the kernel and stops it
  with the kernel; ``kernelspec``: installing it as the "nbcluster" kernel.
- ``extension``: ``%load_ext nbcluster``, which the kernel loads itself: ``magics``
  (``%%remote``), ``routing`` (remote output under the cell that launched the work, and
  cancel-on-interrupt), ``tracebacks`` (remote errors shown like local ones).
- ``cell_code`` and ``cell_task``: a ``%%remote`` body, analysed here and run there.

Importing this package imports neither IPython nor ipykernel; workers import ``cell_task``.
"""

from nbcluster.kernel.extension import load_ipython_extension as load_ipython_extension

__all__ = ["load_ipython_extension"]
