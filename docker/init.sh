#!/usr/bin/env bash
# One-shot setup: migrate the metadata database, write the admin password file (0600) from the
# environment (the bucket and its user are minio-setup's). Idempotent.
set -euo pipefail
airflow db migrate
umask 077
python - <<'PY'
import json, os
path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
with open(path, "w") as fh:
    json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, fh)
PY
mkdir -p /data/landing /data/lake /data/quarantine /data/runs
echo "init: done"
