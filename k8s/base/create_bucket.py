"""Create the MLflow artifact bucket in MinIO when it is missing (the MLflow pod's init container).

MLflow uploads into an existing bucket and never creates one. Waits for MinIO to come up, so the
MLflow pod can start in any order with the MinIO StatefulSet.
"""

import os
import sys
import time

import boto3
from botocore.exceptions import ClientError, EndpointConnectionError

WAIT_S = 5
ATTEMPTS = 60


def main() -> int:
    """Create ARTIFACT_BUCKET at MLFLOW_S3_ENDPOINT_URL unless it exists; 0 on success."""
    bucket = os.environ["ARTIFACT_BUCKET"]
    s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
    for _ in range(ATTEMPTS):
        try:
            s3.head_bucket(Bucket=bucket)
            print(f"bucket {bucket} exists")
            return 0
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            s3.create_bucket(Bucket=bucket)
            print(f"created bucket {bucket}")
            return 0
        except EndpointConnectionError:
            print(f"waiting for {os.environ['MLFLOW_S3_ENDPOINT_URL']}", flush=True)
            time.sleep(WAIT_S)
    print(f"gave up after {ATTEMPTS * WAIT_S} s: MinIO did not answer", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
