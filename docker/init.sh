#!/usr/bin/env bash
# One-shot setup: migrate the metadata database, write the admin password file (0600) from the
# environment, create the S3 bucket. Idempotent.
set -euo pipefail
airflow db migrate
umask 077
python - <<'PY'
import json, os
path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
with open(path, "w") as fh:
    json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, fh)
PY
/opt/loopline/.venv/bin/python - <<'PY'
import boto3, botocore
s3 = boto3.client("s3")
try:
    s3.create_bucket(Bucket="loopline")
except botocore.exceptions.ClientError as err:
    if err.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
        raise
PY
mkdir -p /data/landing /data/lake /data/quarantine /data/runs
echo "init: done"
