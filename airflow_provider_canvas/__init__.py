"""Apache Airflow provider for Canvas LMS and D2L Brightspace."""

__version__ = "0.1.0"
