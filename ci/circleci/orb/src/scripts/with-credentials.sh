#!/bin/bash
# The orb's with-credentials command (its parameters arrive as OIDC_BROKER_*):
# a fresh token per attempt, the credential exported in this shell only.
set -euo pipefail

audience_claims=$(printf '{"aud":"%s"}' "$OIDC_BROKER_URL")
# Word-split on purpose: the command may be several words (npx ..., node FILE).
# shellcheck disable=SC2086
creds=$($OIDC_BROKER_EXCHANGE_COMMAND --token-command "circleci run oidc get --claims $(printf %q "$audience_claims")" \
  --format env --max-attempts "$OIDC_BROKER_MAX_ATTEMPTS")
eval "$creds"
unset creds
eval "$OIDC_BROKER_COMMAND"
