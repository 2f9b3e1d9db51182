"""Tests in a real JupyterLab and a real headless Chromium (see ``lab.py``)."""
