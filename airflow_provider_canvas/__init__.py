"""Apache Airflow provider for Canvas LMS and D2L Brightspace."""

from airflow_provider_canvas._moved import install as _install_moved_paths

__version__ = "0.1.0"

_install_moved_paths()
