#!/usr/bin/env bash
# Write fresh random credentials for the dev overlay into secrets/ (git-ignored); an
# existing file is kept, so re-running does not rotate what a running cluster uses.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p secrets
umask 077
rand() { python3 -c 'import secrets; print(secrets.token_hex(20))'; }
if [ ! -f secrets/s3.env ]; then
  printf 'AWS_ACCESS_KEY_ID=fedpipe-%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$(rand | cut -c1-12)" "$(rand)" > secrets/s3.env
fi
if [ ! -f secrets/db.env ]; then
  printf 'username=mlflow\npassword=%s\n' "$(rand)" > secrets/db.env
fi
echo "credentials in $(pwd)/secrets/"
