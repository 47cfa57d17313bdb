"""The S3 server fixtures (tests/s3server.py) for the URL-store tests."""

from tests.s3server import s3_bucket, s3_endpoint, s3_server, s3_storage_options  # noqa: F401
