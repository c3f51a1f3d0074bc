"""Test-wide settings: quiet TensorFlow, CPU only, a fixed seed per test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    yield
    # CLI tests run `keras-iqa train ...` in-process; `--precision auto` sets a global mixed_bfloat16 policy on bf16 CPUs.
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def moto_s3():
    """A moto S3 server on 127.0.0.1 (a free port) with the bucket "keras-iqa-test", this process's file layer pointed at
    it; yields {"client": boto3 client, "args": the pipeline args that reach it, "url", "bucket"}."""
    pytest.importorskip("apache_beam.io.aws.s3filesystem")
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    from data_pipeline import fs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                              region_name="us-east-1")
        client.create_bucket(Bucket="keras-iqa-test")
        args = [f"--s3_endpoint_url={url}", "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
                "--s3_region_name=us-east-1"]
        fs.configure(args)
        yield {"client": client, "args": args, "url": url, "bucket": "keras-iqa-test"}
    finally:
        server.stop()
